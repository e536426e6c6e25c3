//! The request target, checked and normalised before routing: limits on the path and query,
//! the bytes they may carry, and dot segments resolved so that no path can climb out of the
//! service it names (see [`crate::path`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{StatusCode, Uri, Version, header};
use axum::response::Response;
use futures_util::future::{Either, Ready, ready};

use super::{AppState, split_prefixed};
use crate::metrics::UNROUTED;
use crate::path::{PathError, check_bytes, normalize};
use crate::proxy::{error_response, headers};

/// Wraps the router: a request whose target is refused is answered here, one whose path
/// changes is routed by its normalised path.
#[derive(Debug, Clone)]
pub(super) struct Confine<S> {
    inner: S,
    state: AppState,
}

impl<S> Confine<S> {
    pub fn new(inner: S, state: AppState) -> Self {
        Self { inner, state }
    }
}

impl<S> tower_service::Service<Request> for Confine<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let (max_path, max_query) = self.state.proxy.target_limits();
        let refusal = match check_host(&request) {
            Err(why) => Some((StatusCode::BAD_REQUEST, why.to_owned())),
            Ok(()) => match confine(request.uri(), max_path, max_query) {
                Ok(None) => None,
                Ok(Some(uri)) => {
                    *request.uri_mut() = uri;
                    None
                }
                Err(err) => {
                    let status = match err {
                        PathError::TooLong { .. } => StatusCode::URI_TOO_LONG,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    Some((status, format!("bad request target: {err}")))
                }
            },
        };
        let Some((status, message)) = refusal else {
            return Either::Right(self.inner.call(request));
        };
        let html = headers::wants_html(request.headers());
        self.state
            .proxy
            .metrics()
            .service(UNROUTED)
            .response(status.as_u16(), std::time::Duration::ZERO);
        Either::Left(ready(Ok(error_response(status, &message, html))))
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, and it is a valid authority
/// without user information. Two of them, or one that does not parse, are how requests are
/// smuggled past a proxy to a host other than the one it checked.
fn check_host(request: &Request) -> Result<(), &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    match host {
        None if request.version() == Version::HTTP_11 => {
            Err("an HTTP/1.1 request must have a Host header")
        }
        None => Ok(()),
        Some(value) => {
            let valid = value
                .to_str()
                .ok()
                .filter(|text| !text.is_empty() && !text.contains('@'))
                .and_then(|text| text.parse::<Authority>().ok())
                .is_some();
            if valid {
                Ok(())
            } else {
                Err("the Host header is not a valid host name and port")
            }
        }
    }
}

/// The normalised URI, `None` when the target is already normal, or why it is refused.
///
/// Below `/proxy/{id}` the path is normalised on its own, so `..` can never leave the
/// service it names: climbing above the service's root is refused like climbing above `/`.
fn confine(uri: &Uri, max_path: usize, max_query: usize) -> Result<Option<Uri>, PathError> {
    let path = uri.path();
    check_bytes("path", path, max_path)?;
    if let Some(query) = uri.query() {
        check_bytes("query", query, max_query)?;
    }
    let normalized = match split_prefixed(path) {
        Some((id, rest)) if is_plain_id(id) && !rest.is_empty() => match normalize(rest)? {
            Cow::Borrowed(_) => return Ok(None),
            Cow::Owned(rest) => format!("/proxy/{id}{rest}"),
        },
        _ => match normalize(path)? {
            Cow::Borrowed(_) => return Ok(None),
            Cow::Owned(path) => path,
        },
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query))
            .map_err(|_| PathError::NotOriginForm)?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| PathError::NotOriginForm)
}

/// An id segment that names a service as it is: not empty, not a dot segment, nothing
/// encoded. Anything else is normalised with the whole path.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['%', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The normalised target (the same one when nothing changes), or why it is refused.
    fn run(target: &str) -> Result<String, PathError> {
        let uri: Uri = target.parse().expect("uri");
        confine(&uri, 7168, 8192)
            .map(|new| new.map_or_else(|| target.to_owned(), |uri| uri.to_string()))
    }

    #[test]
    fn normal_targets_pass_unchanged() {
        for target in ["/proxy/a/b?c=1", "/proxy/a", "/_stcore/health"] {
            let uri: Uri = target.parse().expect("uri");
            assert_eq!(confine(&uri, 7168, 8192), Ok(None), "{target}");
        }
    }

    #[test]
    fn dot_segments_stay_inside_the_service() {
        assert_eq!(run("/proxy/a/x/../y?q").as_deref(), Ok("/proxy/a/y?q"));
        assert_eq!(run("/proxy/a/../../secret"), Err(PathError::Climbs));
        assert_eq!(run("/proxy/a/%2e%2E/b"), Err(PathError::Climbs));
        assert_eq!(run("/proxy/a/..%5c..%5csecret"), Err(PathError::Backslash));
        assert_eq!(run("/../../secret"), Err(PathError::Climbs));
        assert_eq!(run("/static/../x").as_deref(), Ok("/x"));
        assert_eq!(run("/proxy/../x").as_deref(), Ok("/x"));
    }

    #[test]
    fn limits_apply_before_anything_else() {
        let long = format!("/proxy/a/{}", "x".repeat(8000));
        assert!(matches!(run(&long), Err(PathError::TooLong { .. })));
        let query = format!("/proxy/a/?{}", "x".repeat(9000));
        assert!(matches!(run(&query), Err(PathError::TooLong { .. })));
    }
}
