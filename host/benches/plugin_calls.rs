//! The plugin cost of one request: the streamlit plugin's hooks through the real runtime,
//! with pooled instances and with a fresh instance per call; then the Gradio plugin in Rust
//! next to its Python twin (`tests/fixtures/python-gradio`, built with the Python SDK), when
//! `PORTICO_BENCH_PYTHON_PLUGIN` names the built component (`just bench` builds it).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use portico::plugin::{
    Header, Isolation, IsolationPolicy, PluginRegistry, PluginSource, Request, Response, Runtime,
    RuntimeConfig, Service,
};

fn request() -> Request {
    Request {
        method: "GET".to_owned(),
        path: "/_stcore/health".to_owned(),
        query: Some("v=1".to_owned()),
        prefix: "/proxy/sales-dashboard".to_owned(),
        public_host: "portal.example:8080".to_owned(),
        scheme: "http".to_owned(),
        headers: Vec::new(),
        service: Service {
            id: "sales-dashboard".to_owned(),
            service_type: "streamlit".to_owned(),
            labels: vec![("team".to_owned(), "sales".to_owned())],
            upstream: "http://127.0.0.1:8501".to_owned(),
        },
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache = std::env::temp_dir().join("portico-bench-cache");
    let load = |isolation: Isolation| {
        let config = RuntimeConfig {
            cache_dir: Some(cache.clone()),
            ..RuntimeConfig::default()
        };
        let policy = IsolationPolicy {
            directory: isolation,
            by_name: HashMap::from([("streamlit".to_owned(), isolation)]),
        };
        rt.block_on(async {
            let runtime = Runtime::new(config).expect("runtime");
            PluginRegistry::load(runtime, None, policy)
                .await
                .expect("plugins")
        })
    };
    let req = request();
    let resp = Response {
        request: request(),
        status: 307,
        headers: vec![Header::new("location", "/_stcore/health/")],
    };
    let mut group = c.benchmark_group("streamlit");
    for (label, isolation) in [
        ("pooled", Isolation::Pooled),
        ("per-call", Isolation::PerCall),
    ] {
        let registry = load(isolation);
        let plugin = registry.for_type("streamlit");
        group.bench_function(format!("on-request/{label}"), |b| {
            b.iter(|| rt.block_on(async { black_box(plugin.on_request(black_box(&req)).await) }))
        });
        group.bench_function(format!("on-request+on-response/{label}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(plugin.on_request(black_box(&req)).await.ok());
                    black_box(plugin.on_response(black_box(&resp)).await.ok())
                })
            })
        });
    }
    group.finish();
    python_next_to_rust(c, &rt, &cache);
}

/// `on-request` of the Gradio plugin, bundled (Rust) and as its Python twin, pooled and per
/// call.
fn python_next_to_rust(c: &mut Criterion, rt: &tokio::runtime::Runtime, cache: &Path) {
    let Some(python) = std::env::var_os("PORTICO_BENCH_PYTHON_PLUGIN").map(PathBuf::from) else {
        println!(
            "gradio/python: skipped (set PORTICO_BENCH_PYTHON_PLUGIN to the Python twin's .wasm; `just bench` does)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&python, dir.path().join("gradio.wasm")).expect("copy the Python plugin");
    let mut req = request();
    req.path = "/gradio_api/queue/join".to_owned();
    req.service.service_type = "gradio".to_owned();
    let mut group = c.benchmark_group("gradio");
    for (language, plugins) in [("rust", None), ("python", Some(dir.path().to_path_buf()))] {
        for (label, isolation) in [
            ("pooled", Isolation::Pooled),
            ("per-call", Isolation::PerCall),
        ] {
            let config = RuntimeConfig {
                cache_dir: Some(cache.to_path_buf()),
                ..RuntimeConfig::default()
            };
            let policy = IsolationPolicy {
                directory: isolation,
                by_name: HashMap::from([("gradio".to_owned(), isolation)]),
            };
            let registry = rt.block_on(async {
                let runtime = Runtime::new(config).expect("runtime");
                PluginRegistry::load(runtime, plugins.clone(), policy)
                    .await
                    .expect("plugins")
            });
            let plugin = registry.for_type("gradio");
            assert_eq!(
                matches!(plugin.source(), PluginSource::File(_)),
                plugins.is_some(),
                "the {language} plugin serves"
            );
            if isolation == Isolation::PerCall {
                // A fresh Python instance costs milliseconds: fewer samples keep the run short.
                group.sample_size(10);
            } else {
                group.sample_size(100);
            }
            group.bench_function(format!("on-request/{language}/{label}"), |b| {
                b.iter(|| {
                    rt.block_on(async { black_box(plugin.on_request(black_box(&req)).await) })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
