//! The `portico plugin` commands, run as a user would.

use std::process::Command;

fn portico(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("portico runs")
}

#[test]
fn plugin_list_shows_the_bundled_plugins() {
    let cache = tempfile::tempdir().expect("temp dir");
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_str().expect("utf-8 path");
    let out = portico(&["plugin", "list", "--plugins-dir", dir], cache.path());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "generic",
        "streamlit",
        "fastapi",
        "flask",
        "dash",
        "jupyter",
        "voila",
        "bokeh",
        "solara",
        "gradio",
    ] {
        let line = text
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_default();
        assert!(
            line.contains("bundled") && line.contains("0.1.0"),
            "{name}: {text}"
        );
    }
}

#[test]
fn plugin_check_accepts_a_plugin_and_prints_its_info() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, wasm) = portico::plugin::bundled()
        .iter()
        .find(|(name, _)| *name == "streamlit")
        .expect("bundled streamlit");
    let file = dir.path().join("streamlit.wasm");
    std::fs::write(&file, wasm).expect("write");
    let out = portico(
        &["plugin", "check", file.to_str().expect("utf-8")],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name:          streamlit"), "{text}");
    assert!(text.contains("default port:  8501"), "{text}");
    assert!(text.contains("health path:   /_stcore/health"), "{text}");
    assert!(
        text.contains("claims under:  /_stcore/, /static/"),
        "{text}"
    );
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin_with_a_reason() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0 not really").expect("write");
    let out = portico(
        &["plugin", "check", garbage.to_str().expect("utf-8")],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid Portico plugin"), "{err}");

    let missing = dir.path().join("missing.wasm");
    let out = portico(
        &["plugin", "check", missing.to_str().expect("utf-8")],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading"));
}

/// A bundled plugin written to a file, as a third-party plugin would be.
fn bundled_file(name: &str, dir: &std::path::Path) -> String {
    let (_, wasm) = portico::plugin::bundled()
        .iter()
        .find(|(bundled, _)| *bundled == name)
        .expect("bundled plugin");
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, wasm).expect("write");
    file.to_str().expect("utf-8").to_owned()
}

#[test]
fn plugin_try_prints_what_each_hook_answers() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = bundled_file("dash", dir.path());
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        r#"<script src="/_dash-component-suites/dash/x.js"></script><script id="_dash-config" type="application/json">{"requests_pathname_prefix":"/"}</script>"#,
    )
    .expect("write");
    let out = portico(
        &[
            "plugin",
            "try",
            &file,
            "--id",
            "sales",
            "--path",
            "/_dash-layout",
            "--status",
            "302",
            "--location",
            "/login",
            "--content-type",
            "text/html",
            "--body",
            page.to_str().expect("utf-8"),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "on-request:\n  upstream /_dash-layout\n  set x-forwarded-prefix: /proxy/sales"
        ),
        "{text}"
    );
    assert!(text.contains("score 100 under /_dash-"), "{text}");
    assert!(text.contains("set location: /proxy/sales/login"), "{text}");
    assert!(
        text.contains(r#""requests_pathname_prefix":"/proxy/sales/""#),
        "{text}"
    );
    assert!(
        text.contains(r#"src="/proxy/sales/_dash-component-suites/dash/x.js""#),
        "{text}"
    );
}

#[test]
fn plugin_try_streams_a_body_through_rewrite_chunk() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = bundled_file("voila", dir.path());
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        "<head>\n<script src=\"/voila/static/voila.js\"></script>\n<link href=\"/voila/static/a.css\">\n</head>\n",
    )
    .expect("write");
    let out = portico(
        &[
            "plugin",
            "try",
            &file,
            "--id",
            "nb",
            "--status",
            "200",
            "--content-type",
            "text/html",
            "--body",
            page.to_str().expect("utf-8"),
            "--chunk-size",
            "30",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("body: rewritten as it streams (rewrite-chunk)"),
        "{text}"
    );
    // The first piece ends inside the script tag: it is held back to the next call.
    assert!(
        text.contains("call 1: 30 bytes in, 7 out, 23 held"),
        "{text}"
    );
    assert!(
        text.contains(
            "<script src=\"/proxy/nb/voila/static/voila.js\"></script>\n<link href=\"/proxy/nb/voila/static/a.css\">"
        ),
        "{text}"
    );
}

#[test]
fn plugin_try_says_when_a_hook_is_not_asked_and_refuses_bad_arguments() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = bundled_file("generic", dir.path());
    let out = portico(
        &[
            "plugin",
            "try",
            &file,
            "--path",
            "/static/x.js",
            "--status",
            "200",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not asked: /static/x.js is under none of its claim prefixes"),
        "{text}"
    );
    assert!(text.contains("on-response (200):\n  not asked"), "{text}");
    let bad = portico(
        &["plugin", "try", &file, "--header", "no-colon"],
        cache.path(),
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected NAME:VALUE"),
        "{bad:?}"
    );
}

/// Runs `plugin check` and `plugin try --path /_my-framework/api` on a scaffolded plugin's
/// component and returns what `try` printed.
fn check_and_try(wasm: &std::path::Path, cache: &std::path::Path) -> String {
    let wasm = wasm.to_str().expect("utf-8");
    let check = portico(&["plugin", "check", wasm], cache);
    assert!(check.status.success(), "{check:?}");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("service types: my-framework"), "{text}");
    let trial = portico(
        &["plugin", "try", wasm, "--path", "/_my-framework/api"],
        cache,
    );
    assert!(trial.status.success(), "{trial:?}");
    String::from_utf8_lossy(&trial.stdout).into_owned()
}

#[test]
fn plugin_new_writes_a_project_that_builds_outside_the_repository() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = portico(
        &[
            "plugin",
            "new",
            "my-framework",
            "--dir",
            dir.path().to_str().expect("utf-8"),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let project = dir.path().join("my-framework");
    // Its own unit tests, natively, then the component, with nothing from this repository but
    // what the binary wrote.
    let test = Command::new("cargo")
        .arg("test")
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(test.status.success(), "{test:?}");
    let build = Command::new(project.join("build.sh"))
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("build.sh runs");
    assert!(build.status.success(), "{build:?}");
    let text = check_and_try(&project.join("my-framework.wasm"), cache.path());
    assert!(text.contains("score 100 under /_my-framework/"), "{text}");
    let refused = portico(
        &[
            "plugin",
            "new",
            "my-framework",
            "--dir",
            dir.path().to_str().expect("utf-8"),
        ],
        cache.path(),
    );
    assert!(
        !refused.status.success(),
        "an existing project is not overwritten"
    );
}

#[test]
fn plugin_new_writes_a_python_project_that_builds_outside_the_repository() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = portico(
        &[
            "plugin",
            "new",
            "my-framework",
            "--lang",
            "python",
            "--dir",
            dir.path().to_str().expect("utf-8"),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let project = dir.path().join("my-framework");
    // build.sh runs the project's unit tests, then builds the component from what the binary
    // wrote; componentize-py is installed once into the workspace's target directory and
    // shared with the other tests that build Python plugins.
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/componentize-py-venv");
    let build = Command::new(project.join("build.sh"))
        .current_dir(&project)
        .env("PORTICO_COMPONENTIZE_VENV", &venv)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("build.sh runs");
    assert!(build.status.success(), "{build:?}");
    assert!(
        String::from_utf8_lossy(&build.stderr).contains("Ran 2 tests"),
        "{build:?}"
    );
    let text = check_and_try(&project.join("my-framework.wasm"), cache.path());
    assert!(
        text.contains("set x-forwarded-prefix: /proxy/app"),
        "{text}"
    );
    assert!(text.contains("score 100 under /_my-framework/"), "{text}");
}
