//! The plugin cost of one request: the streamlit plugin's hooks through the real runtime,
//! with pooled instances and with a fresh instance per call.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portico::plugin::{
    Header, Isolation, IsolationPolicy, PluginRegistry, Request, Response, Runtime, RuntimeConfig,
    Service,
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
