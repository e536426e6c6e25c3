//! HTTP forwarding: the plugin's `on-request`, the upstream attempts with retries, then the
//! plugin's `on-response` and body rewrite. Bodies stream both ways.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use hyper::body::Incoming;

use super::body::{self, IdleTimeout, RequestBody};
use super::retry::{self, Backoff, Failure};
use super::{
    Context, Live, Proxy, ProxyError, UpstreamClient, headers, upstream_uri, with_fallback,
};
use crate::metrics::UpstreamFailure;
use crate::plugin::{self, fallback};
use crate::registry::Status;
use crate::registry::balance::InFlight;

pub(super) async fn forward(
    proxy: &Proxy,
    live: &Live,
    ctx: Context,
    request: axum::extract::Request,
) -> Result<Response, ProxyError> {
    let upstream = with_fallback(&ctx.service, ctx.plugin.on_request(&ctx.request), || {
        fallback::on_request(&ctx.request, ctx.keeps_prefix())
    })
    .await?;
    let (parts, body) = request.into_parts();
    let method = parts.method;
    let mut request_headers = parts.headers;
    if !ctx.plugin.info().rewrite_content_types.is_empty() {
        headers::decodable_encodings(&mut request_headers);
    }
    headers::upstream_request(
        &mut request_headers,
        &ctx.view,
        live.proxy.rewrite_host,
        &upstream.headers,
        ctx.granted(),
    );
    let body = RequestBody::new(body, live.client.body_timeout());
    let metrics = proxy.metrics.service(&ctx.service.id);
    let mut backoff = Backoff::new(&live.retry, ctx.started);
    // Whether the one resend of a request that reached an upstream has been used.
    let mut resent = false;
    loop {
        let mut last = None;
        let attempts = ctx.service.attempts(ctx.pinned.as_deref());
        for (i, &attempt) in attempts.iter().enumerate() {
            let base = ctx.service.url(attempt);
            let uri = upstream_uri(base, &upstream.path, upstream.query.as_deref())?;
            let mut request = axum::http::Request::new(body.attempt());
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = request_headers.clone();
            // Counted only where there is a choice to make.
            let in_flight = (ctx.service.replicas.len() > 1)
                .then(|| ctx.service.state(attempt.replica).start());
            match send(proxy.client(), request, &body, proxy.timeouts.first_byte()).await {
                Ok(response) => {
                    super::connector::Uses::count(response.extensions());
                    ctx.service.health.set(Status::Up);
                    ctx.service.succeeded(attempt);
                    return respond(
                        proxy,
                        live,
                        &ctx,
                        &method,
                        response,
                        attempt.replica,
                        in_flight,
                    )
                    .await;
                }
                Err(failure) => {
                    drop(in_flight);
                    if let Some(client) = body.client_error() {
                        tracing::debug!(service = %ctx.service.id, error = %client, "the client's request body failed");
                        return Err(client);
                    }
                    metrics.upstream_error(failure.kind);
                    if failure.kind == UpstreamFailure::Refused {
                        ctx.service.health.set(Status::Down);
                    }
                    if failure.kind != UpstreamFailure::Invalid
                        && ctx.service.failed(attempt, &live.outliers)
                    {
                        metrics.ejection();
                    }
                    tracing::debug!(service = %ctx.service.id, upstream = %base, error = %failure.detail, "upstream attempt failed");
                    let elsewhere = attempts[i + 1..]
                        .iter()
                        .any(|next| next.replica != attempt.replica);
                    if !failure.retriable(&method, body.replayable(), resent, elsewhere) {
                        tracing::warn!(service = %ctx.service.id, upstream = %base, error = %failure.detail, "upstream failed");
                        return Err(failure.into_error(&ctx.service.id));
                    }
                    resent |= !failure.before_send;
                    last = Some(failure);
                }
            }
        }
        retry::next_round(&mut backoff, last, &ctx.service.id, &metrics).await?;
    }
}

/// Sends one attempt. The first-byte timeout runs from the end of the request body, so a long
/// upload is not cut short.
async fn send(
    client: &UpstreamClient,
    attempt: axum::http::Request<Body>,
    body: &RequestBody,
    first_byte: Duration,
) -> Result<axum::http::Response<Incoming>, Failure> {
    let response = client.request(attempt);
    tokio::pin!(response);
    tokio::select! {
        result = &mut response => return result.map_err(|err| Failure::of(&err)),
        () = body.sent() => {}
    }
    match tokio::time::timeout(first_byte, response).await {
        Ok(result) => result.map_err(|err| Failure::of(&err)),
        Err(_) => Err(Failure::timeout(format!(
            "no response headers within {first_byte:?}"
        ))),
    }
}

/// Turns the upstream response into the client's: hop-by-hop headers out, the plugin's edits
/// and body rewrite applied, the affinity cookie set on HTML pages.
async fn respond(
    proxy: &Proxy,
    live: &Live,
    ctx: &Context,
    method: &Method,
    upstream: axum::http::Response<Incoming>,
    replica: usize,
    in_flight: Option<InFlight>,
) -> Result<Response, ProxyError> {
    let (parts, incoming) = upstream.into_parts();
    let status = parts.status;
    let mut response_headers = parts.headers;
    let upstream = Body::new(
        IdleTimeout::new(incoming, proxy.timeouts.idle(), "the upstream").holding(in_flight),
    );
    headers::strip_hop_by_hop(&mut response_headers);
    let media = headers::media_type(&response_headers);
    let plugin = &ctx.plugin;
    let asks = plugin.rewrites(&media)
        || response_headers
            .keys()
            .any(|name| plugin.wants_response_header(name.as_str()));
    let mut rewrite = None;
    if asks {
        let seen = plugin::Response {
            request: ctx.request.clone(),
            status: status.as_u16(),
            headers: headers::for_plugin(&response_headers, |name| {
                name == "content-type" || plugin.wants_response_header(name)
            }),
        };
        // Boxed, as the rewrite below: most responses take neither path, and inline they
        // would weigh on every request's future.
        let plan = with_fallback(&ctx.service, Box::pin(plugin.on_response(&seen)), || {
            fallback::on_response(&seen)
        })
        .await?;
        headers::apply_edits(&mut response_headers, &plan.headers);
        if plan.body != plugin::BodyRewrite::Keep
            && plugin.rewrites(&media)
            && media != "text/event-stream"
            && has_body(method, status)
        {
            rewrite = Some((plan.body, seen));
        }
    }
    if !ctx.prefixed {
        scope_cookies(&mut response_headers, &ctx.request.prefix);
    }
    if media == "text/html"
        && status.as_u16() < 400
        && let Ok(cookie) = HeaderValue::from_str(&headers::affinity_cookie(&ctx.service.id))
    {
        response_headers.append(header::SET_COOKIE, cookie);
    }
    pin(ctx, replica, &mut response_headers);
    let body = match rewrite {
        Some((plugin::BodyRewrite::Streamed, seen)) => {
            body::rewrite_stream(upstream, &mut response_headers, ctx, seen)
        }
        Some((_, seen)) => {
            let wanted = usize::try_from(plugin.info().max_rewrite_bytes).unwrap_or(usize::MAX);
            let limit = live.proxy.max_rewrite_bytes.min(wanted);
            Box::pin(body::rewrite(
                upstream,
                &mut response_headers,
                limit,
                ctx,
                &seen,
            ))
            .await?
        }
        None => upstream,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    Ok(response)
}

/// Pins the browser session to the replica that answered, for a sticky service, unless the
/// request's cookie names it already.
pub(super) fn pin(ctx: &Context, replica: usize, response_headers: &mut axum::http::HeaderMap) {
    if !ctx.service.sticky {
        return;
    }
    let tag = ctx.service.tag(replica);
    if ctx.pinned.as_deref() == Some(tag) {
        return;
    }
    if let Ok(cookie) = HeaderValue::from_str(&headers::replica_cookie(&ctx.service.id, tag)) {
        response_headers.append(header::SET_COOKIE, cookie);
    }
}

/// Scopes every cookie of a response to a request that arrived without the prefix to the
/// service that answered it: its default or root path would make it visible to every app.
fn scope_cookies(response_headers: &mut axum::http::HeaderMap, prefix: &str) {
    if !response_headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let scoped: Vec<HeaderValue> = response_headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| portico_rewrite::scope_cookie_path_always(text, prefix))
                .and_then(|text| HeaderValue::from_str(&text).ok())
                .unwrap_or_else(|| value.clone())
        })
        .collect();
    response_headers.remove(header::SET_COOKIE);
    for value in scoped {
        response_headers.append(header::SET_COOKIE, value);
    }
}

fn has_body(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && status != StatusCode::PARTIAL_CONTENT
}
