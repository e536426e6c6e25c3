//! Header rules: hop-by-hop filtering, `X-Forwarded-*`, plugin header edits, cookies.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::plugin::{Header, HeaderEdits};

/// The cookie Portico sets on proxied HTML pages to route their un-prefixed requests.
pub const AFFINITY_COOKIE: &str = "portico_affinity";

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers: `Connection` and the headers it names, the fixed list, and
/// every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection`: one pass over the names finds
    // them, and only those are removed.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    // With `Transfer-Encoding`, a `Content-Length` is wrong by definition (RFC 9112 6.3) and
    // must not survive the removal of the encoding: it would desynchronise the next hop.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
    doomed.extend(named);
    for name in doomed {
        headers.remove(name);
    }
}

/// How the client reached Portico.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// The client's address, when known.
    pub peer: Option<IpAddr>,
    /// `http` or `https`.
    pub scheme: String,
    /// The host the client addressed.
    pub host: String,
}

impl ClientView {
    /// Reads the view from the request; with `trust`, `X-Forwarded-Proto`/`-Host` set by a
    /// front proxy win over what Portico sees.
    pub fn of(
        headers: &HeaderMap,
        uri_host: Option<&str>,
        peer: Option<IpAddr>,
        trust: bool,
    ) -> Self {
        let forwarded = |name: &str| {
            trust
                .then(|| headers.get(name)?.to_str().ok())
                .flatten()
                .and_then(|value| value.split(',').next())
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let host = forwarded("x-forwarded-host")
            .or_else(|| headers.get(header::HOST)?.to_str().ok().map(str::to_owned))
            .or_else(|| uri_host.map(str::to_owned))
            .unwrap_or_default();
        let scheme = forwarded("x-forwarded-proto")
            .filter(|proto| proto == "http" || proto == "https")
            .unwrap_or_else(|| "http".to_owned());
        Self { peer, scheme, host }
    }
}

/// Sets `X-Forwarded-For` (appending the client), `-Proto` and `-Host`.
pub fn set_forwarded(headers: &mut HeaderMap, view: &ClientView) {
    if let Some(peer) = view.peer {
        let previous: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let chain = if previous.is_empty() {
            peer.to_string()
        } else {
            format!("{}, {peer}", previous.join(", "))
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&view.scheme) {
        headers.insert(X_FORWARDED_PROTO, value);
    }
    match HeaderValue::from_str(&view.host) {
        Ok(value) if !view.host.is_empty() => {
            headers.insert(X_FORWARDED_HOST, value);
        }
        _ => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Prepares the client's headers for the upstream: hop-by-hop headers and Portico's own cookie
/// out, `X-Forwarded-*` set, the client's `Host` kept (unless `rewrite_host`), then the plugin's
/// edits, and last the headers the auth service granted (`granted`), which nothing before can
/// override.
pub fn upstream_request(
    headers: &mut HeaderMap,
    view: &ClientView,
    rewrite_host: bool,
    edits: &HeaderEdits,
    granted: &[(HeaderName, HeaderValue)],
) {
    strip_hop_by_hop(headers);
    // The upstream's interim answer would not reach the client; the body is sent at once.
    headers.remove(header::EXPECT);
    remove_cookies(headers, |name| {
        name == AFFINITY_COOKIE || name.starts_with(crate::registry::REPLICA_COOKIE_PREFIX)
    });
    set_forwarded(headers, view);
    if rewrite_host {
        headers.remove(header::HOST);
    } else if !headers.contains_key(header::HOST) {
        // HTTP/2 clients send `:authority` instead of `Host`.
        if let Ok(host) = HeaderValue::from_str(&view.host)
            && !view.host.is_empty()
        {
            headers.insert(header::HOST, host);
        }
    }
    apply_edits(headers, edits);
    for (name, _) in granted {
        headers.remove(name);
    }
    for (name, value) in granted {
        headers.append(name.clone(), value.clone());
    }
}

/// Keeps in the client's `Accept-Encoding` only the codings a body rewrite can decode (gzip,
/// deflate, identity), for services whose plugin rewrites bodies: an upstream that answered
/// in brotli or zstd would have its page sent on unrewritten. Without any of those left, the
/// upstream is asked for `identity`.
pub fn decodable_encodings(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCEPT_ENCODING) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|coding| {
            let name = coding.split(';').next().unwrap_or_default().trim();
            ["gzip", "x-gzip", "deflate", "identity"]
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known))
        })
        .map(str::to_owned)
        .collect();
    let value = if kept.is_empty() {
        "identity".to_owned()
    } else {
        kept.join(", ")
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::ACCEPT_ENCODING, value);
    }
}

/// Applies a plugin's edits: removals first, then each name in `set` replaces every value of
/// that name (later entries of the same name add values). Invalid entries are skipped; the
/// guard has already refused them, so this only protects against a guard bug.
pub fn apply_edits(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    let mut replaced: Vec<HeaderName> = Vec::new();
    for Header { name, value } in &edits.set {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if replaced.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            replaced.push(name);
        }
    }
}

/// The headers a plugin asked for, with lower-case names and UTF-8 values.
pub fn for_plugin(headers: &HeaderMap, wants: impl Fn(&str) -> bool) -> Vec<Header> {
    headers
        .iter()
        .filter(|(name, _)| wants(name.as_str()))
        .filter_map(|(name, value)| Some(Header::new(name.as_str(), value.to_str().ok()?)))
        .collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
        })
}

/// Removes cookie `name` from the `Cookie` headers, leaving every other pair byte for byte.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    remove_cookies(headers, |key| key == name);
}

/// Removes the cookies whose name `doomed` picks from the `Cookie` headers, leaving every other
/// pair byte for byte. Nothing is allocated unless a cookie goes.
pub fn remove_cookies(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    fn name_of(pair: &str) -> Option<&str> {
        pair.trim().split_once('=').map(|(key, _)| key.trim())
    }
    let any = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .any(|pair| name_of(pair).is_some_and(&doomed));
    if !any {
        return;
    }
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    headers.remove(header::COOKIE);
    for value in values {
        let Ok(text) = value.to_str() else {
            headers.append(header::COOKIE, value);
            continue;
        };
        let joined = text
            .split(';')
            .filter(|pair| !name_of(pair).is_some_and(&doomed))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        if !joined.is_empty()
            && let Ok(value) = HeaderValue::from_str(&joined)
        {
            headers.append(header::COOKIE, value);
        }
    }
}

/// The `Set-Cookie` value of the affinity cookie for service `id`.
pub fn affinity_cookie(id: &str) -> String {
    format!("{AFFINITY_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
}

/// The `Set-Cookie` value that pins a browser session of service `id` to the replica tagged
/// `tag`.
pub fn replica_cookie(id: &str, tag: &str) -> String {
    format!(
        "{}={tag}; Path=/; HttpOnly; SameSite=Lax",
        crate::registry::replica_cookie(id)
    )
}

/// True when the client prefers HTML (a browser): its `Accept` names `text/html`.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("text/html"))
}

/// The media type of the `Content-Type` header, lower case, without parameters; empty if none.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(portico_rewrite::media_type)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decodable_encodings_are_asked_for() {
        let mut headers = HeaderMap::new();
        decodable_encodings(&mut headers);
        assert!(headers.get(header::ACCEPT_ENCODING).is_none(), "none added");
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.9, zstd, deflate"),
        );
        decodable_encodings(&mut headers);
        assert_eq!(headers[header::ACCEPT_ENCODING], "gzip;q=0.9, deflate");
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        decodable_encodings(&mut headers);
        assert_eq!(headers[header::ACCEPT_ENCODING], "identity");
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("content-length", "10"),
            ("cookie", "a=1"),
            ("host", "example"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["cookie", "host"]);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut headers = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
        ]);
        let view = ClientView::of(&headers, None, Some([127, 0, 0, 1].into()), false);
        assert_eq!(view.host, "");
        let view = ClientView {
            host: "public:8080".to_owned(),
            ..view
        };
        set_forwarded(&mut headers, &view);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "public:8080");
    }

    #[test]
    fn trusted_forwarded_headers_win() {
        let headers = map(&[
            ("host", "inner"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer"),
        ]);
        let view = ClientView::of(&headers, None, None, true);
        assert_eq!(
            (view.scheme.as_str(), view.host.as_str()),
            ("https", "outer")
        );
        let view = ClientView::of(&headers, None, None, false);
        assert_eq!(
            (view.scheme.as_str(), view.host.as_str()),
            ("http", "inner")
        );
    }

    #[test]
    fn edits_remove_then_replace() {
        let mut headers = map(&[
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-drop", "1"),
        ]);
        let edits = HeaderEdits {
            set: vec![
                Header::new("set-cookie", "a=1; Path=/p"),
                Header::new("set-cookie", "b=2; Path=/p"),
            ],
            remove: vec!["x-drop".to_owned()],
        };
        apply_edits(&mut headers, &edits);
        let cookies: Vec<&str> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(cookies, vec!["a=1; Path=/p", "b=2; Path=/p"]);
        assert!(!headers.contains_key("x-drop"));
    }

    #[test]
    fn affinity_cookie_is_read_and_removed() {
        let mut headers = map(&[("cookie", "a=1; portico_affinity=dash; b=\"x y\"")]);
        assert_eq!(cookie(&headers, AFFINITY_COOKIE).as_deref(), Some("dash"));
        remove_cookie(&mut headers, AFFINITY_COOKIE);
        assert_eq!(headers["cookie"], "a=1; b=\"x y\"");
        let mut only = map(&[("cookie", "portico_affinity=dash")]);
        remove_cookie(&mut only, AFFINITY_COOKIE);
        assert!(!only.contains_key("cookie"));
        let mut two = map(&[
            ("cookie", "_oauth2_proxy=s; a=1"),
            ("cookie", "_oauth2_proxy_1=t"),
            ("cookie", "b=2"),
        ]);
        remove_cookies(&mut two, |name| name.starts_with("_oauth2_proxy"));
        let left: Vec<&str> = two
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(left, vec!["a=1", "b=2"]);
    }
}
