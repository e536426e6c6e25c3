//! Checks on every value a plugin returns, before the host uses it.
//!
//! A plugin is untrusted input. Whatever it returns must be something the host could have
//! produced itself: an origin-form path, well-formed headers that cannot split a message or
//! change its framing, and bounded sizes.

use super::bindings::{
    ChunkRewrite, HeaderEdits, PluginInfo, ResponsePlan, Subprotocols, UpstreamRequest,
    UpstreamWebsocket,
};

/// The longest path or query a plugin may return.
pub const MAX_URL_PART: usize = 8 * 1024;
/// The longest header value a plugin may set.
pub const MAX_HEADER_VALUE: usize = 16 * 1024;
/// The most header names a plugin may set plus remove in one answer.
pub const MAX_HEADER_EDITS: usize = 128;
/// The most bytes of header names and values in one answer.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most subprotocols a plugin may offer upstream.
pub const MAX_SUBPROTOCOLS: usize = 32;
/// The largest body a plugin may return from `rewrite-body`.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// The most bytes a streamed rewrite may hold back, and the largest state it may carry.
pub const MAX_CHUNK_CARRY: usize = 64 * 1024;

/// Headers that control the connection or the message framing; only the host sets them.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
];

/// Why a plugin's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("path {0:?} is not origin-form (must start with a single `/`, no scheme or authority)")]
    NotOriginForm(String),
    #[error("{what} contains a forbidden byte 0x{byte:02x}")]
    ForbiddenByte { what: &'static str, byte: u8 },
    #[error("{what} is {len} bytes, over the limit of {limit}")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("header name {0:?} is not a valid lower-case token")]
    BadHeaderName(String),
    #[error("header {0:?} is reserved to the host")]
    ReservedHeader(String),
    #[error("{0} header edits, over the limit of {MAX_HEADER_EDITS}")]
    TooManyHeaders(usize),
    #[error("subprotocol {0:?} is not a valid token")]
    BadSubprotocol(String),
    #[error("path {path:?}: {why}")]
    Unconfined {
        path: String,
        why: crate::path::PathError,
    },
    #[error("plugin info: {0}")]
    BadInfo(String),
}

/// Checks an `on-request` answer.
pub fn upstream_request(plan: &UpstreamRequest) -> Result<(), GuardError> {
    target(&plan.path, plan.query.as_deref())?;
    header_edits(&plan.headers)
}

/// Checks an `on-websocket` answer.
pub fn upstream_websocket(plan: &UpstreamWebsocket) -> Result<(), GuardError> {
    target(&plan.path, plan.query.as_deref())?;
    header_edits(&plan.headers)?;
    if let Subprotocols::Replace(list) = &plan.protocols {
        if list.len() > MAX_SUBPROTOCOLS {
            return Err(GuardError::TooLong {
                what: "subprotocol list",
                len: list.len(),
                limit: MAX_SUBPROTOCOLS,
            });
        }
        for protocol in list {
            if protocol.is_empty()
                || protocol.len() > MAX_HEADER_VALUE
                || !protocol.bytes().all(is_token_byte)
            {
                return Err(GuardError::BadSubprotocol(truncate(protocol)));
            }
        }
    }
    Ok(())
}

/// Checks an `on-response` answer.
pub fn response_plan(plan: &ResponsePlan) -> Result<(), GuardError> {
    header_edits(&plan.headers)
}

/// Checks a `rewrite-body` answer against the service's rewrite limit (and [`MAX_BODY`]).
pub fn body(body: &[u8], limit: usize) -> Result<(), GuardError> {
    let limit = limit.min(MAX_BODY);
    if body.len() > limit {
        return Err(GuardError::TooLong {
            what: "rewritten body",
            len: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Checks a `rewrite-chunk` answer for a chunk of `chunk_len` bytes: the output within
/// [`MAX_BODY`], the held bytes within the chunk and [`MAX_CHUNK_CARRY`], and so the state.
pub fn chunk(answer: &ChunkRewrite, chunk_len: usize) -> Result<(), GuardError> {
    body(&answer.output, MAX_BODY)?;
    let held = usize::try_from(answer.held).unwrap_or(usize::MAX);
    let limit = chunk_len.min(MAX_CHUNK_CARRY);
    if held > limit {
        return Err(GuardError::TooLong {
            what: "held part of a chunk",
            len: held,
            limit,
        });
    }
    if answer.state.len() > MAX_CHUNK_CARRY {
        return Err(GuardError::TooLong {
            what: "streamed rewrite state",
            len: answer.state.len(),
            limit: MAX_CHUNK_CARRY,
        });
    }
    Ok(())
}

/// The most claim prefixes a plugin may declare.
pub const MAX_CLAIM_PREFIXES: usize = 32;
/// The longest claim prefix a plugin may declare.
pub const MAX_CLAIM_PREFIX: usize = 256;

/// Checks what a plugin says about itself at load.
pub fn info(info: &PluginInfo) -> Result<(), GuardError> {
    let bad = |why: String| Err(GuardError::BadInfo(why));
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if !name_ok(&info.name) {
        return bad(format!(
            "name {:?} must be 1 to 64 characters of a-z, 0-9, - and _",
            truncate(&info.name)
        ));
    }
    if info.version.is_empty()
        || info.version.len() > 64
        || info.version.bytes().any(|b| b.is_ascii_control())
    {
        return bad(format!(
            "version {:?} is empty, too long or has control characters",
            truncate(&info.version)
        ));
    }
    if info.service_types.len() > 32 || !info.service_types.iter().all(|t| name_ok(t)) {
        return bad("service-types must be at most 32 names of a-z, 0-9, - and _".to_owned());
    }
    if let Some(health) = &info.health_path {
        path(health)?;
    }
    for list in [
        &info.detect,
        &info.request_headers,
        &info.response_headers,
        &info.rewrite_content_types,
    ] {
        if list.len() > 64 || list.iter().any(|item| item.is_empty() || item.len() > 256) {
            return bad("lists must have at most 64 entries of 1 to 256 bytes".to_owned());
        }
    }
    for name in info.request_headers.iter().chain(&info.response_headers) {
        if name != "*" && !is_lower_token(name) {
            return Err(GuardError::BadHeaderName(truncate(name)));
        }
    }
    if info.claim_prefixes.len() > MAX_CLAIM_PREFIXES {
        return bad(format!(
            "claim-prefixes has {} entries, over the limit of {MAX_CLAIM_PREFIXES}",
            info.claim_prefixes.len()
        ));
    }
    for prefix in &info.claim_prefixes {
        claim_prefix(prefix).map_err(|why| {
            GuardError::BadInfo(format!("claim prefix {:?} {why}", truncate(prefix)))
        })?;
    }
    Ok(())
}

/// Why a declared claim prefix cannot be used, if it cannot: it must name a part of the
/// un-prefixed path space as a client would send it, and not all of it.
fn claim_prefix(prefix: &str) -> Result<(), String> {
    if prefix == "/" {
        return Err(
            "is `/` alone, which would claim every un-prefixed path: declare the framework's own \
             prefixes instead (`/_stcore/`, `/static/`)"
                .to_owned(),
        );
    }
    if !prefix.starts_with('/') || prefix.starts_with("//") {
        return Err("must start with a single `/`".to_owned());
    }
    if prefix.len() > MAX_CLAIM_PREFIX {
        return Err(format!(
            "is {} bytes, over the limit of {MAX_CLAIM_PREFIX}",
            prefix.len()
        ));
    }
    if let Some(byte) = prefix
        .bytes()
        .find(|b| !(0x21..0x7f).contains(b) || matches!(*b, b'?' | b'#' | b'\\'))
    {
        return Err(format!(
            "contains byte 0x{byte:02x}: a prefix is visible ASCII without `?`, `#` or `\\`"
        ));
    }
    if prefix.contains("..") {
        return Err("contains `..`".to_owned());
    }
    crate::path::check_confined(prefix).map_err(|why| format!("is refused: {why}"))
}

/// Checks the path and query of an upstream request.
pub fn target(path_: &str, query_: Option<&str>) -> Result<(), GuardError> {
    path(path_)?;
    query(query_)
}

fn path(path: &str) -> Result<(), GuardError> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(GuardError::NotOriginForm(truncate(path)));
    }
    url_part("path", path, |b| b == b'?' || b == b'#')?;
    // A dot segment or a backslash would let the join with the upstream base climb out of it.
    crate::path::check_confined(path).map_err(|why| GuardError::Unconfined {
        path: truncate(path),
        why,
    })
}

fn query(query: Option<&str>) -> Result<(), GuardError> {
    match query {
        Some(query) => url_part("query", query, |b| b == b'#'),
        None => Ok(()),
    }
}

/// A path or query: visible ASCII only (anything else must be percent-encoded).
fn url_part(
    what: &'static str,
    text: &str,
    also_forbidden: fn(u8) -> bool,
) -> Result<(), GuardError> {
    if text.len() > MAX_URL_PART {
        return Err(GuardError::TooLong {
            what,
            len: text.len(),
            limit: MAX_URL_PART,
        });
    }
    match text
        .bytes()
        .find(|b| !(0x21..0x7f).contains(b) || also_forbidden(*b))
    {
        Some(byte) => Err(GuardError::ForbiddenByte { what, byte }),
        None => Ok(()),
    }
}

fn header_edits(edits: &HeaderEdits) -> Result<(), GuardError> {
    let count = edits.set.len() + edits.remove.len();
    if count > MAX_HEADER_EDITS {
        return Err(GuardError::TooManyHeaders(count));
    }
    let mut total = 0;
    for name in edits.set.iter().map(|h| &h.name).chain(&edits.remove) {
        header_name(name)?;
        total += name.len();
    }
    for header in &edits.set {
        let value = &header.value;
        if value.len() > MAX_HEADER_VALUE {
            return Err(GuardError::TooLong {
                what: "header value",
                len: value.len(),
                limit: MAX_HEADER_VALUE,
            });
        }
        // Tab and visible characters only: CR, LF and NUL would split or truncate the message.
        if let Some(byte) = value
            .bytes()
            .find(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(GuardError::ForbiddenByte {
                what: "header value",
                byte,
            });
        }
        total += value.len();
    }
    if total > MAX_HEADER_BYTES {
        return Err(GuardError::TooLong {
            what: "header edits",
            len: total,
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(())
}

fn header_name(name: &str) -> Result<(), GuardError> {
    if !is_lower_token(name) {
        return Err(GuardError::BadHeaderName(truncate(name)));
    }
    if RESERVED_HEADERS.contains(&name) {
        return Err(GuardError::ReservedHeader(name.to_owned()));
    }
    Ok(())
}

fn is_lower_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| is_token_byte(b) && !b.is_ascii_uppercase())
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A short, printable excerpt of untrusted text for an error message.
fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Header;

    fn request(path: &str, headers: Vec<Header>) -> UpstreamRequest {
        UpstreamRequest {
            path: path.to_owned(),
            query: None,
            headers: HeaderEdits {
                set: headers,
                remove: Vec::new(),
            },
        }
    }

    #[test]
    fn accepts_ordinary_answers() {
        let plan = request(
            "/a/b%20c",
            vec![Header::new("x-forwarded-prefix", "/proxy/a")],
        );
        assert_eq!(upstream_request(&plan), Ok(()));
    }

    #[test]
    fn refuses_paths_that_are_not_origin_form() {
        for bad in [
            "http://evil/x",
            "//evil/x",
            "",
            "relative",
            "/a b",
            "/a\r\nx: y",
            "/a\0",
            "/a?b",
            "/a#f",
            "/é",
            "/app/../../secret",
            "/app/./x",
            "/%2e%2e/secret",
            "/a\\b",
            "/a%5Cb",
            "/a/..%2Fb",
        ] {
            assert!(
                upstream_request(&request(bad, Vec::new())).is_err(),
                "{bad:?} accepted"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_URL_PART));
        assert!(matches!(
            upstream_request(&request(&long, Vec::new())),
            Err(GuardError::TooLong { .. })
        ));
    }

    #[test]
    fn refuses_header_smuggling() {
        let crlf = request("/", vec![Header::new("x-a", "ok\r\nx-b: injected")]);
        assert!(matches!(
            upstream_request(&crlf),
            Err(GuardError::ForbiddenByte { byte: b'\r', .. })
        ));
        for reserved in [
            "host",
            "transfer-encoding",
            "content-length",
            "connection",
            "upgrade",
        ] {
            let plan = request("/", vec![Header::new(reserved, "x")]);
            assert_eq!(
                upstream_request(&plan),
                Err(GuardError::ReservedHeader(reserved.to_owned()))
            );
        }
        let bad_name = request("/", vec![Header::new("x a", "v")]);
        assert!(matches!(
            upstream_request(&bad_name),
            Err(GuardError::BadHeaderName(_))
        ));
        let upper = request("/", vec![Header::new("X-A", "v")]);
        assert!(matches!(
            upstream_request(&upper),
            Err(GuardError::BadHeaderName(_))
        ));
    }

    #[test]
    fn refuses_oversized_output() {
        let many = (0..=MAX_HEADER_EDITS)
            .map(|i| Header::new(format!("x-{i}"), "v"))
            .collect();
        assert!(matches!(
            upstream_request(&request("/", many)),
            Err(GuardError::TooManyHeaders(_))
        ));
        let big = (0..8)
            .map(|i| Header::new(format!("x-{i}"), "v".repeat(MAX_HEADER_VALUE)))
            .collect();
        assert!(matches!(
            upstream_request(&request("/", big)),
            Err(GuardError::TooLong { .. })
        ));
    }

    #[test]
    fn refuses_bad_subprotocols() {
        let plan = UpstreamWebsocket {
            path: "/ws".to_owned(),
            query: None,
            protocols: Subprotocols::Replace(vec!["ok".to_owned(), "bad, list".to_owned()]),
            headers: HeaderEdits::none(),
        };
        assert!(matches!(
            upstream_websocket(&plan),
            Err(GuardError::BadSubprotocol(_))
        ));
    }

    fn claiming(prefixes: &[&str]) -> PluginInfo {
        PluginInfo {
            name: "framework".to_owned(),
            version: "1.0.0".to_owned(),
            service_types: vec!["framework".to_owned()],
            default_port: None,
            health_path: None,
            keep_prefix: false,
            detect: Vec::new(),
            claim_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            rewrite_content_types: Vec::new(),
            max_rewrite_bytes: 0,
        }
    }

    #[test]
    fn accepts_framework_claim_prefixes() {
        for prefixes in [
            &[][..],
            &["/_stcore/", "/static/", "/media/", "/favicon.png"][..],
            &["/_dash-", "/assets/", "/_reload-hash"][..],
            &["/.well-known/x/", "/a%20b/", "/a"][..],
        ] {
            assert_eq!(info(&claiming(prefixes)), Ok(()), "{prefixes:?}");
        }
        let longest = format!("/{}", "a".repeat(MAX_CLAIM_PREFIX - 1));
        assert_eq!(info(&claiming(&[&longest])), Ok(()));
    }

    #[test]
    fn refuses_a_claim_on_every_path() {
        let Err(GuardError::BadInfo(why)) = info(&claiming(&["/_stcore/", "/"])) else {
            panic!("`/` accepted as a claim prefix");
        };
        assert!(why.contains("`/` alone"), "{why}");
        assert!(why.contains("every un-prefixed path"), "{why}");
    }

    #[test]
    fn refuses_claim_prefixes_that_are_not_plain_paths() {
        let long = format!("/{}", "a".repeat(MAX_CLAIM_PREFIX));
        for bad in [
            "",
            "static/",
            "//evil/",
            "http://evil/",
            "/a b/",
            "/a\r\n",
            "/a\0",
            "/a?b",
            "/a#b",
            "/a\\b",
            "/a%5Cb",
            "/..",
            "/a/../b/",
            "/a..b",
            "/%2e%2e/",
            "/./",
            "/a/.%2E/",
            "/é/",
            long.as_str(),
        ] {
            assert!(
                matches!(info(&claiming(&[bad])), Err(GuardError::BadInfo(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn refuses_too_many_claim_prefixes() {
        let many: Vec<String> = (0..=MAX_CLAIM_PREFIXES)
            .map(|i| format!("/p{i}/"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            info(&claiming(&many)),
            Err(GuardError::BadInfo(_))
        ));
        assert_eq!(info(&claiming(&many[..MAX_CLAIM_PREFIXES])), Ok(()));
    }
}
