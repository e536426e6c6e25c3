//! A 256 MiB body up and down through Portico with the process's memory checked: bodies are
//! streamed, never buffered. In its own test binary so other tests do not disturb the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt as _;
use portico_tests::proxy::{Portico, proc_status_kib, service, upstream};

const CHUNK: usize = 64 * 1024;
const TOTAL: u64 = 256 * 1024 * 1024;

fn chunks() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    futures_util::stream::iter((0..TOTAL / CHUNK as u64).map(move |_| Ok(chunk.clone())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_with_flat_memory() -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/sink",
            post(|request: Request| async move {
                let mut body = request.into_body().into_data_stream();
                let mut total = 0u64;
                while let Some(Ok(chunk)) = body.next().await {
                    total += chunk.len() as u64;
                }
                total.to_string()
            }),
        )
        .route("/source", get(|| async { Body::from_stream(chunks()) }));
    let up = upstream(app).await?;
    let portico = Portico::start(&service("big", "generic", up)).await?;
    // Warm up (plugin instances, connection pool) before the baseline.
    portico
        .client
        .get(portico.url("/proxy/big/source"))
        .send()
        .await?
        .chunk()
        .await?;
    let baseline = proc_status_kib("VmRSS")?;
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                if let Ok(rss) = proc_status_kib("VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let answer = portico
        .client
        .post(portico.url("/proxy/big/sink"))
        .body(reqwest::Body::wrap_stream(chunks()))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(answer, TOTAL.to_string(), "the upload arrived whole");

    let response = portico
        .client
        .get(portico.url("/proxy/big/source"))
        .send()
        .await?;
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        received += chunk?.len() as u64;
    }
    assert_eq!(received, TOTAL, "the download arrived whole");
    sampler.abort();

    let grown_mib = peak.load(Ordering::Relaxed).saturating_sub(baseline) / 1024;
    println!(
        "baseline RSS {} MiB, peak growth {grown_mib} MiB for 2 x 256 MiB",
        baseline / 1024
    );
    assert!(
        grown_mib < 64,
        "memory grew by {grown_mib} MiB while streaming 256 MiB"
    );
    Ok(())
}
