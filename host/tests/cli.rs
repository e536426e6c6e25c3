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
fn plugin_list_shows_the_five_bundled_plugins() {
    let cache = tempfile::tempdir().expect("temp dir");
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_str().expect("utf-8 path");
    let out = portico(&["plugin", "list", "--plugins-dir", dir], cache.path());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["generic", "streamlit", "fastapi", "flask", "dash"] {
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
