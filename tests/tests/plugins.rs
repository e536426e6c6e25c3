//! The plugin runtime through the real compiled components: the five bundled plugins and a
//! hostile fixture, loaded by the real registry from real files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portico::plugin::{
    BodyRewrite, Header, Isolation, IsolationPolicy, OrphanRequest, Plugin, PluginError,
    PluginRegistry, PluginSource, Request, Response, Runtime, RuntimeConfig, Service, Subprotocols,
    guard::GuardError,
};

const HOSTILE: &str = env!("PORTICO_HOSTILE_WASM");
/// A plugin built against `portico:plugin@0.1.0`.
const PLUGIN_0_1: &str = env!("PORTICO_PLUGIN_0_1_WASM");
/// A plugin that declares `/` as a claim prefix.
const CLAIMS_EVERYTHING: &str = env!("PORTICO_CLAIMS_EVERYTHING_WASM");
/// The body limit `rewrite-body` is called with: Portico's default `max-rewrite-bytes`.
const REWRITE_LIMIT: usize = 8 * 1024 * 1024;

/// The runtime the tests load plugins into. The deadline is far above what a call needs even
/// in a debug build on a busy machine (flooding the log, filling 16 MiB, returning 200 KiB of
/// headers): a call fails for what it does, not for the machine's speed.
fn config(cache: &Path) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        pool_size: 2,
        call_timeout: Duration::from_secs(2),
        ..RuntimeConfig::default()
    }
}

async fn registry_with(
    dir: Option<&Path>,
    runtime: RuntimeConfig,
    policy: IsolationPolicy,
) -> Arc<PluginRegistry> {
    let runtime = Runtime::new(runtime).expect("runtime starts");
    PluginRegistry::load(runtime, dir.map(Path::to_owned), policy)
        .await
        .expect("plugins load")
}

async fn bundled_only() -> (tempfile::TempDir, Arc<PluginRegistry>) {
    let cache = tempfile::tempdir().expect("temp dir");
    let registry = registry_with(None, config(cache.path()), IsolationPolicy::default()).await;
    (cache, registry)
}

/// A directory holding the hostile fixture, and a registry over it.
async fn with_hostile(
    runtime: RuntimeConfig,
) -> (tempfile::TempDir, Arc<PluginRegistry>, Arc<Plugin>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(HOSTILE, dir.path().join("hostile.wasm")).expect("copy fixture");
    let registry = registry_with(Some(dir.path()), runtime, IsolationPolicy::default()).await;
    let hostile = registry.get("hostile").expect("hostile plugin loaded");
    (dir, registry, hostile)
}

fn request(service_type: &str, path: &str) -> Request {
    Request {
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: None,
        prefix: "/proxy/app".to_owned(),
        public_host: "portal.example:8080".to_owned(),
        scheme: "http".to_owned(),
        headers: Vec::new(),
        service: Service {
            id: "app".to_owned(),
            service_type: service_type.to_owned(),
            labels: Vec::new(),
            upstream: "http://127.0.0.1:9".to_owned(),
        },
    }
}

fn response(service_type: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    Response {
        request: request(service_type, path),
        status: 200,
        headers: headers
            .iter()
            .map(|(name, value)| Header::new(*name, *value))
            .collect(),
    }
}

fn header<'a>(headers: &'a [Header], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name == name)
        .map(|h| h.value.as_str())
        .collect()
}

#[tokio::test]
async fn the_bundled_plugins_load_and_describe_themselves() {
    let (_cache, registry) = bundled_only().await;
    let names: Vec<String> = registry
        .plugins()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "bokeh",
            "dash",
            "fastapi",
            "flask",
            "generic",
            "gradio",
            "jupyter",
            "solara",
            "streamlit",
            "voila"
        ]
    );
    let streamlit = registry.for_type("streamlit");
    assert_eq!(streamlit.info().default_port, Some(8501));
    assert_eq!(
        streamlit.info().health_path.as_deref(),
        Some("/_stcore/health")
    );
    assert!(
        streamlit
            .info()
            .detect
            .iter()
            .any(|hint| hint == "streamlit")
    );
    assert_eq!(registry.for_type("fastapi").info().default_port, Some(8000));
    assert_eq!(registry.for_type("flask").info().default_port, Some(5000));
    assert_eq!(registry.for_type("dash").info().default_port, Some(8050));
    for (service_type, plugin, port) in [
        ("jupyter", "jupyter", 8888),
        ("notebook", "jupyter", 8888),
        ("voila", "voila", 8866),
        ("bokeh", "bokeh", 5006),
        ("panel", "bokeh", 5006),
        ("solara", "solara", 8765),
        ("gradio", "gradio", 7860),
    ] {
        let found = registry.for_type(service_type);
        assert_eq!(found.name(), plugin, "{service_type}");
        assert_eq!(found.info().default_port, Some(port), "{service_type}");
    }
    assert_eq!(registry.for_type("no-such-framework").name(), "generic");
    assert!(
        registry
            .plugins()
            .iter()
            .all(|p| *p.source() == PluginSource::Bundled)
    );
}

#[tokio::test]
async fn requests_have_the_prefix_stripped_and_announced() {
    let (_cache, registry) = bundled_only().await;
    for service_type in ["generic", "streamlit", "fastapi", "flask", "dash"] {
        let mut req = request(service_type, "/items/7");
        req.query = Some("q=1".to_owned());
        let plan = registry
            .for_type(service_type)
            .on_request(&req)
            .await
            .expect("on-request");
        assert_eq!(plan.path, "/items/7", "{service_type}");
        assert_eq!(plan.query.as_deref(), Some("q=1"), "{service_type}");
        assert_eq!(
            header(&plan.headers.set, "x-forwarded-prefix"),
            ["/proxy/app"],
            "{service_type}"
        );
    }
}

#[tokio::test]
async fn streamlit_keeps_the_subprotocol_list_and_claims_its_assets() {
    let (_cache, registry) = bundled_only().await;
    let streamlit = registry.for_type("streamlit");
    let offered = vec![
        "streamlit".to_owned(),
        "xsrf-token".to_owned(),
        "session-1".to_owned(),
    ];
    let plan = streamlit
        .on_websocket(&request("streamlit", "/_stcore/stream"), &offered)
        .await
        .expect("on-websocket");
    assert_eq!(plan.path, "/_stcore/stream");
    assert!(matches!(plan.protocols, Subprotocols::PassThrough));
    let claim = |path: &str| OrphanRequest {
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: None,
    };
    assert_eq!(
        streamlit
            .claim(&claim("/_stcore/host-config"))
            .await
            .expect("claim"),
        100
    );
    assert!(
        streamlit
            .claim(&claim("/static/js/main.js"))
            .await
            .expect("claim")
            > 0
    );
    assert_eq!(
        streamlit
            .claim(&claim("/_dash-layout"))
            .await
            .expect("claim"),
        0
    );
    let dash = registry.for_type("dash");
    assert_eq!(
        dash.claim(&claim("/_dash-layout")).await.expect("claim"),
        100
    );
    assert_eq!(
        registry
            .for_type("generic")
            .claim(&claim("/_dash-layout"))
            .await
            .expect("claim"),
        0
    );
}

#[tokio::test]
async fn locations_and_cookie_paths_stay_under_the_prefix() {
    let (_cache, registry) = bundled_only().await;
    for service_type in ["generic", "flask", "fastapi"] {
        let plugin = registry.for_type(service_type);
        let resp = response(
            service_type,
            "/items",
            &[
                ("location", "http://portal.example:8080/items/"),
                ("set-cookie", "session=a%3Db; Path=/; HttpOnly"),
                ("set-cookie", "other=1"),
            ],
        );
        let plan = plugin.on_response(&resp).await.expect("on-response");
        assert_eq!(
            header(&plan.headers.set, "location"),
            ["http://portal.example:8080/proxy/app/items/"],
            "{service_type}"
        );
        assert_eq!(
            header(&plan.headers.set, "set-cookie"),
            ["session=a%3Db; Path=/proxy/app; HttpOnly", "other=1"],
            "{service_type}"
        );
        let relative = response(service_type, "/a", &[("location", "next")]);
        let plan = plugin.on_response(&relative).await.expect("on-response");
        assert!(
            header(&plan.headers.set, "location").is_empty(),
            "{service_type}"
        );
    }
}

#[tokio::test]
async fn dash_index_page_is_rewritten_under_the_prefix() {
    let (_cache, registry) = bundled_only().await;
    let dash = registry.for_type("dash");
    let resp = response("dash", "/", &[("content-type", "text/html; charset=utf-8")]);
    assert!(dash.rewrites("text/html"));
    let plan = dash.on_response(&resp).await.expect("on-response");
    assert_eq!(plan.body, BodyRewrite::Whole);
    let page = br#"<script id="_dash-config" type="application/json">{"requests_pathname_prefix":"/"}</script><script src="/_dash-component-suites/dash/dash-renderer/build/dash_renderer.v2_18_2m1.min.js"></script>"#;
    let body = dash
        .rewrite_body(&resp, page, REWRITE_LIMIT)
        .await
        .expect("rewrite")
        .expect("changed");
    let body = String::from_utf8(body).expect("utf-8");
    assert!(
        body.contains(r#""requests_pathname_prefix":"/proxy/app/""#),
        "{body}"
    );
    assert!(
        body.contains(r#"src="/proxy/app/_dash-component-suites/"#),
        "{body}"
    );
}

#[tokio::test]
async fn fastapi_docs_and_schema_point_under_the_prefix() {
    let (_cache, registry) = bundled_only().await;
    let fastapi = registry.for_type("fastapi");
    let docs = response("fastapi", "/docs", &[("content-type", "text/html")]);
    assert_eq!(
        fastapi.on_response(&docs).await.expect("on-response").body,
        BodyRewrite::Whole
    );
    let page = b"<script>const ui = SwaggerUIBundle({url: '/openapi.json'})</script>";
    let body = fastapi
        .rewrite_body(&docs, page, REWRITE_LIMIT)
        .await
        .expect("rewrite")
        .expect("changed");
    assert!(String::from_utf8_lossy(&body).contains("url: '/proxy/app/openapi.json'"));
    let schema = response(
        "fastapi",
        "/openapi.json",
        &[("content-type", "application/json")],
    );
    assert_eq!(
        fastapi
            .on_response(&schema)
            .await
            .expect("on-response")
            .body,
        BodyRewrite::Whole
    );
    let body = fastapi
        .rewrite_body(&schema, br#"{"openapi":"3.1.0","paths":{}}"#, REWRITE_LIMIT)
        .await
        .expect("rewrite")
        .expect("changed");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("still JSON");
    assert_eq!(json["servers"][0]["url"], "/proxy/app");
    let other = response("fastapi", "/items", &[("content-type", "application/json")]);
    assert_eq!(
        fastapi.on_response(&other).await.expect("on-response").body,
        BodyRewrite::Keep
    );
}

#[tokio::test]
async fn flask_links_in_pages_stay_under_the_prefix() {
    let (_cache, registry) = bundled_only().await;
    let flask = registry.for_type("flask");
    let page = response(
        "flask",
        "/",
        &[("content-type", "text/html; charset=utf-8")],
    );
    assert_eq!(
        flask.on_response(&page).await.expect("on-response").body,
        BodyRewrite::Whole
    );
    let html = br#"<a href="/about">About</a><form method="post" action="/submit"></form>"#;
    let body = flask
        .rewrite_body(&page, html, REWRITE_LIMIT)
        .await
        .expect("rewrite")
        .expect("changed");
    let body = String::from_utf8(body).expect("utf-8");
    assert!(body.contains(r#"href="/proxy/app/about""#), "{body}");
    assert!(body.contains(r#"action="/proxy/app/submit""#), "{body}");
    let generic = registry.for_type("generic");
    assert_eq!(
        generic.on_response(&page).await.expect("on-response").body,
        BodyRewrite::Keep
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_and_the_host_keeps_serving() {
    let cache = tempfile::tempdir().expect("temp dir");
    let (_dir, registry, hostile) = with_hostile(config(cache.path())).await;
    let spinning = tokio::spawn({
        let hostile = Arc::clone(&hostile);
        async move { hostile.on_request(&request("hostile", "/loop")).await }
    });
    // While the plugin spins, other plugins answer (the spinning call yields on each tick).
    let streamlit = registry.for_type("streamlit");
    let mut served = 0;
    while !spinning.is_finished() {
        streamlit
            .on_request(&request("streamlit", "/"))
            .await
            .expect("streamlit answers");
        served += 1;
        tokio::task::yield_now().await;
    }
    assert!(served > 0);
    let result = spinning.await.expect("task");
    assert!(matches!(result, Err(PluginError::Timeout(_))), "{result:?}");
    let after = hostile
        .on_request(&request("hostile", "/fine"))
        .await
        .expect("serves again");
    assert_eq!(after.path, "/fine");
    assert_eq!(
        hostile
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn memory_growth_is_capped() {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = RuntimeConfig {
        memory_limit: 16 * 1024 * 1024,
        ..config(cache.path())
    };
    let (_dir, _registry, hostile) = with_hostile(runtime).await;
    let result = hostile.on_request(&request("hostile", "/grow")).await;
    assert!(
        matches!(result, Err(PluginError::OutOfMemory)),
        "{result:?}"
    );
    assert!(
        hostile
            .on_request(&request("hostile", "/fine"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn hostile_answers_are_refused() {
    let cache = tempfile::tempdir().expect("temp dir");
    let (_dir, _registry, hostile) = with_hostile(config(cache.path())).await;
    let call = |path: &'static str| {
        let hostile = Arc::clone(&hostile);
        async move { hostile.on_request(&request("hostile", path)).await }
    };
    assert!(matches!(call("/trap").await, Err(PluginError::Trap(_))));
    assert!(matches!(
        call("/crlf").await,
        Err(PluginError::Refused(GuardError::ForbiddenByte {
            byte: b'\r',
            ..
        }))
    ));
    assert!(matches!(
        call("/absolute").await,
        Err(PluginError::Refused(GuardError::NotOriginForm(_)))
    ));
    assert!(matches!(
        call("/host").await,
        Err(PluginError::Refused(GuardError::ReservedHeader(_)))
    ));
    // Whichever limit it hits first (answer size, memory or time), the answer never reaches use.
    let huge = call("/huge").await;
    assert!(
        matches!(
            huge,
            Err(PluginError::Refused(_) | PluginError::OutOfMemory | PluginError::Timeout(_))
        ),
        "{huge:?}"
    );
    let printed = call("/print").await;
    assert!(
        printed.is_ok(),
        "printing is allowed, and rate-limited: {printed:?}"
    );
    assert_eq!(call("/fine").await.expect("still serves").path, "/fine");
}

#[tokio::test]
async fn the_sandbox_has_no_files_environment_or_sockets() {
    let cache = tempfile::tempdir().expect("temp dir");
    let (_dir, _registry, hostile) = with_hostile(config(cache.path())).await;
    let plan = hostile
        .on_request(&request("hostile", "/file"))
        .await
        .expect("answers");
    let file = header(&plan.headers.set, "x-file");
    assert!(file[0].starts_with("denied"), "{file:?}");
    let plan = hostile
        .on_request(&request("hostile", "/env"))
        .await
        .expect("answers");
    assert_eq!(header(&plan.headers.set, "x-env"), ["vars=0 args=0"]);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut req = request("hostile", "/socket");
    req.query = Some(port.to_string());
    let plan = hostile.on_request(&req).await.expect("answers");
    let socket = header(&plan.headers.set, "x-socket");
    assert!(socket[0].starts_with("denied"), "{socket:?}");
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the plugin reached a socket");
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_is_quarantined() {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = RuntimeConfig {
        quarantine: portico::plugin::QuarantinePolicy {
            failures: 3,
            ..Default::default()
        },
        ..config(cache.path())
    };
    let (_dir, registry, hostile) = with_hostile(runtime).await;
    for _ in 0..3 {
        assert!(matches!(
            hostile.on_request(&request("hostile", "/trap")).await,
            Err(PluginError::Trap(_))
        ));
    }
    assert_eq!(hostile.state(), portico::plugin::PluginState::Quarantined);
    assert!(matches!(
        hostile.on_request(&request("hostile", "/fine")).await,
        Err(PluginError::Quarantined)
    ));
    // Other plugins are unaffected.
    assert!(
        registry
            .for_type("generic")
            .on_request(&request("generic", "/"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn per_call_isolation_gives_every_call_a_fresh_instance() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(HOSTILE, dir.path().join("hostile.wasm")).expect("copy fixture");
    let policy = IsolationPolicy {
        directory: Isolation::PerCall,
        ..IsolationPolicy::default()
    };
    let registry = registry_with(Some(dir.path()), config(cache.path()), policy).await;
    let hostile = registry.get("hostile").expect("loaded");
    assert_eq!(hostile.isolation(), Isolation::PerCall);
    assert_eq!(
        registry.for_type("streamlit").isolation(),
        Isolation::Pooled
    );
    for _ in 0..3 {
        hostile
            .on_request(&request("hostile", "/"))
            .await
            .expect("answers");
    }
    let made = hostile
        .stats()
        .instantiations
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(made, 3);
}

/// Waits until `check` holds for the registry, reloading on each turn as the watcher would.
async fn eventually(registry: &PluginRegistry, check: impl Fn(&PluginRegistry) -> bool) -> bool {
    for _ in 0..100 {
        if check(registry) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_directory_is_followed_live() {
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = registry_with(
        Some(dir.path()),
        config(cache.path()),
        IsolationPolicy::default(),
    )
    .await;
    let _watch = registry.watch().expect("watch");
    let bundled_streamlit = registry.for_type("streamlit");

    // Adding: a directory plugin overrides the bundled one of the same name.
    let streamlit_wasm = portico::plugin::bundled()
        .iter()
        .find(|(name, _)| *name == "streamlit")
        .expect("bundled streamlit")
        .1;
    std::fs::write(dir.path().join("streamlit.wasm"), streamlit_wasm).expect("write");
    std::fs::copy(HOSTILE, dir.path().join("hostile.wasm")).expect("copy fixture");
    assert!(
        eventually(&registry, |r| matches!(
            r.for_type("streamlit").source(),
            PluginSource::File(_)
        ) && r.get("hostile").is_some())
        .await
    );

    // In-flight users keep the version they hold.
    assert!(
        bundled_streamlit
            .on_request(&request("streamlit", "/"))
            .await
            .is_ok()
    );

    // Replacing with an invalid file is refused; the previous version keeps serving.
    let hostile_before = registry.get("hostile").expect("loaded");
    std::fs::write(dir.path().join("hostile.wasm"), b"not a component").expect("write");
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm garbage").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hostile_after = registry.get("hostile").expect("still loaded");
    assert!(Arc::ptr_eq(&hostile_before, &hostile_after));
    assert!(
        hostile_after
            .on_request(&request("hostile", "/"))
            .await
            .is_ok()
    );

    // Removing: the bundled plugin comes back.
    std::fs::remove_file(dir.path().join("streamlit.wasm")).expect("remove");
    std::fs::remove_file(dir.path().join("hostile.wasm")).expect("remove");
    assert!(
        eventually(&registry, |r| *r.for_type("streamlit").source()
            == PluginSource::Bundled
            && r.get("hostile").is_none())
        .await
    );
}

#[tokio::test]
async fn a_restart_loads_compiled_plugins_from_the_cache() {
    let cache = tempfile::tempdir().expect("temp dir");
    let _first = registry_with(None, config(cache.path()), IsolationPolicy::default()).await;
    let cached = std::fs::read_dir(cache.path()).expect("cache dir").count();
    let bundled = portico::plugin::bundled().len();
    assert_eq!(cached, bundled, "one compiled artifact per bundled plugin");
    let second = registry_with(None, config(cache.path()), IsolationPolicy::default()).await;
    assert_eq!(second.plugins().len(), bundled);
    // A corrupt artifact is recompiled, not trusted.
    for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    let third = registry_with(None, config(cache.path()), IsolationPolicy::default()).await;
    assert!(
        third
            .for_type("dash")
            .on_request(&request("dash", "/"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bundled_plugins_declare_the_prefixes_they_claim() {
    let (_cache, registry) = bundled_only().await;
    let declared = |name: &str| registry.for_type(name).info().claim_prefixes.clone();
    assert!(declared("streamlit").iter().any(|p| p == "/_stcore/"));
    assert!(declared("streamlit").iter().any(|p| p == "/static/"));
    assert!(declared("dash").iter().any(|p| p == "/_dash-"));
    assert!(declared("dash").iter().any(|p| p == "/assets/"));
    for name in ["generic", "fastapi", "flask"] {
        assert!(declared(name).is_empty(), "{name} claims nothing");
    }
}

/// The calls made to `plugin` so far (every hook).
fn calls(plugin: &Plugin) -> u64 {
    plugin
        .stats()
        .calls
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_greedy_claim_takes_nothing_outside_its_declared_prefixes() -> anyhow::Result<()> {
    use portico_tests::proxy::{Portico, service, upstream};
    let named = |name: &'static str| axum::Router::new().fallback(move || async move { name });
    let st = upstream(named("streamlit")).await?;
    let hostile_up = upstream(named("hostile")).await?;
    let portico = Portico::start_with_plugins(
        &(service("st", "streamlit", st) + &service("evil", "hostile", hostile_up)),
        &[Path::new(HOSTILE)],
    )
    .await?;
    let hostile = portico
        .running
        .state
        .proxy()
        .plugins()
        .get("hostile")
        .expect("the hostile plugin is loaded");
    assert_eq!(hostile.info().claim_prefixes, ["/hostile/"]);
    let before = calls(&hostile);

    // The hostile plugin answers u32::MAX to every claim, but it declared only `/hostile/`: it
    // is not asked about Streamlit's paths, and Streamlit gets them, cookies and all.
    for path in [
        "/_stcore/health",
        "/_stcore/host-config",
        "/static/js/main.js",
    ] {
        let response = portico
            .client
            .get(portico.url(path))
            .header("cookie", "streamlit_session=secret")
            .send()
            .await?;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
        assert_eq!(response.text().await?, "streamlit", "{path}");
    }
    let (status, _) = portico.fetch("/nowhere.js").await?;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(
        calls(&hostile),
        before,
        "the hostile plugin was called for paths it did not declare"
    );

    // Under its own prefix its claim stands, and the counter shows it was asked.
    let (status, body) = portico.fetch("/hostile/ping").await?;
    assert_eq!(
        (status, body.as_str()),
        (reqwest::StatusCode::OK, "hostile")
    );
    assert!(calls(&hostile) > before);
    Ok(())
}

#[tokio::test]
async fn a_plugin_that_declares_slash_is_refused_at_load() {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(config(cache.path())).expect("runtime starts");
    let wasm = std::fs::read(CLAIMS_EVERYTHING).expect("fixture");
    let refused = portico::plugin::check(&runtime, &wasm).await;
    let Err(PluginError::Refused(GuardError::BadInfo(why))) = &refused else {
        panic!("a claim prefix of `/` was accepted: {refused:?}");
    };
    assert!(
        why.contains("`/` alone") && why.contains("every un-prefixed path"),
        "{why}"
    );

    // From the plugins directory: refused, and the rest keeps working.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(CLAIMS_EVERYTHING, dir.path().join("greedy.wasm")).expect("copy fixture");
    let registry = registry_with(
        Some(dir.path()),
        config(cache.path()),
        IsolationPolicy::default(),
    )
    .await;
    assert!(registry.get("claims-everything").is_none());
    assert_eq!(registry.plugins().len(), portico::plugin::bundled().len());
}

#[tokio::test]
async fn a_plugin_built_against_0_1_is_refused_with_how_to_upgrade() {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(config(cache.path())).expect("runtime starts");
    let wasm = std::fs::read(PLUGIN_0_1).expect("fixture");
    let refused = portico::plugin::check(&runtime, &wasm).await;
    let Err(PluginError::Invalid(why)) = &refused else {
        panic!("a 0.1 plugin was not refused as invalid: {refused:?}");
    };
    for needed in [
        "built against portico:plugin@0.1.0",
        "implements portico:plugin@0.3.0",
        "rebuild it with portico-plugin-sdk 0.3.0",
        "PluginInfo::claim_prefixes",
    ] {
        assert!(why.contains(needed), "{needed:?} missing from: {why}");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(PLUGIN_0_1, dir.path().join("legacy.wasm")).expect("copy fixture");
    let registry = registry_with(
        Some(dir.path()),
        config(cache.path()),
        IsolationPolicy::default(),
    )
    .await;
    assert!(registry.get("legacy").is_none());
    assert!(!registry.knows_type("legacy"));
}

#[tokio::test]
async fn the_hostile_fixture_misbehaves_on_response_as_documented() {
    let cache = tempfile::tempdir().expect("temp dir");
    let (_dir, _registry, hostile) = with_hostile(config(cache.path())).await;
    let upstream_says = |value: &str| {
        response(
            "hostile",
            "/",
            &[("content-type", "text/html"), ("x-hostile", value)],
        )
    };

    // What becomes of the 16 MiB body `rewrite-body` then returns is for the body tests.
    let plan = hostile
        .on_response(&upstream_says("bloat"))
        .await
        .expect("on-response");
    assert_eq!(plan.body, BodyRewrite::Whole);

    // Each header is valid on its own; together they are about 200 KiB, which the guard may
    // refuse as a whole.
    match hostile.on_response(&upstream_says("headers")).await {
        Ok(plan) => {
            let filler: Vec<_> = plan
                .headers
                .set
                .iter()
                .filter(|h| h.name.starts_with("x-hostile-"))
                .collect();
            assert_eq!(filler.len(), 100);
            assert!(filler.iter().all(|h| h.value.len() == 2048));
        }
        Err(err) => assert!(matches!(err, PluginError::Refused(_)), "{err:?}"),
    }

    let trapped = hostile.on_response(&upstream_says("trap")).await;
    assert!(matches!(trapped, Err(PluginError::Trap(_))), "{trapped:?}");

    let plain = hostile
        .on_response(&response("hostile", "/", &[("content-type", "text/html")]))
        .await
        .expect("on-response");
    assert_eq!(plain.body, BodyRewrite::Keep);
}
