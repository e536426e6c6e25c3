//! Pure rewriting rules for serving an app under a path prefix.
//!
//! Both sides use these: the plugin SDK builds its default hooks from them, and the host uses
//! them for the generic fallback when a plugin fails, so the two never disagree.

/// The upstream path for `path` (the part below `prefix`, starting with `/`).
///
/// With `keep_prefix` the app expects the whole public path, so the prefix is put back.
pub fn upstream_path(path: &str, prefix: &str, keep_prefix: bool) -> String {
    if keep_prefix {
        format!("{prefix}{path}")
    } else {
        path.to_owned()
    }
}

/// True when `path` is `prefix` itself or lies below it.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

/// The `Location` a client should see, or `None` to leave it unchanged.
///
/// A root-relative location (`/login`) gets the prefix unless it already has it. An absolute
/// URL (or protocol-relative one) on the public host is treated the same way, because apps
/// that build absolute redirects from the `Host` header (FastAPI's slash redirects) do not know
/// the prefix. Relative locations and other hosts are left alone.
pub fn prefix_location(location: &str, prefix: &str, public_host: &str) -> Option<String> {
    if let Some(rest) = location.strip_prefix("//") {
        return prefix_on_host(rest, prefix, public_host).map(|fixed| format!("//{fixed}"));
    }
    if location.starts_with('/') {
        if has_prefix(location, prefix) {
            return None;
        }
        return Some(format!("{prefix}{location}"));
    }
    for scheme in ["http://", "https://"] {
        // `get`, not indexing: the value may hold a multi-byte character where the scheme
        // would end (`http:/é`).
        if let Some(given) = location
            .get(..scheme.len())
            .filter(|given| given.eq_ignore_ascii_case(scheme))
        {
            let rest = &location[scheme.len()..];
            return prefix_on_host(rest, prefix, public_host)
                .map(|fixed| format!("{given}{fixed}"));
        }
    }
    None
}

/// `authority/path` with the prefix added to the path when the authority is the public host.
fn prefix_on_host(rest: &str, prefix: &str, public_host: &str) -> Option<String> {
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if !authority.eq_ignore_ascii_case(public_host) {
        return None;
    }
    if path.starts_with('/') {
        if has_prefix(path, prefix) {
            return None;
        }
        return Some(format!("{authority}{prefix}{path}"));
    }
    Some(format!("{authority}{prefix}/{path}"))
}

/// A `Set-Cookie` value whose `Path` attribute is moved under the prefix, or `None` when it
/// needs no change.
///
/// Only the attribute changes; the cookie's name and value are never touched or re-encoded.
/// The attribute is recognised in any case and spacing (`path = /`). A cookie without `Path`
/// already defaults to the public request path, so it stays as it is.
pub fn scope_cookie_path(set_cookie: &str, prefix: &str) -> Option<String> {
    scope_cookie(set_cookie, prefix, false)
}

/// As [`scope_cookie_path`], and a cookie without `Path` gets `Path={prefix}`: for responses
/// to requests that arrived without the prefix, whose default path would lie outside it.
pub fn scope_cookie_path_always(set_cookie: &str, prefix: &str) -> Option<String> {
    scope_cookie(set_cookie, prefix, true)
}

fn scope_cookie(set_cookie: &str, prefix: &str, add_missing: bool) -> Option<String> {
    let mut out = String::with_capacity(set_cookie.len() + prefix.len() + 7);
    let mut changed = false;
    let mut has_path = false;
    for (index, part) in set_cookie.split(';').enumerate() {
        if index > 0 {
            out.push(';');
        }
        let attribute = part.split_once('=');
        let is_path = index > 0
            && attribute.is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("path"));
        let Some((name, value)) = attribute.filter(|_| is_path) else {
            out.push_str(part);
            continue;
        };
        has_path = true;
        let value = value.trim();
        if !value.starts_with('/') || has_prefix(value, prefix) {
            out.push_str(part);
            continue;
        }
        let lead = &name[..name.len() - name.trim_start().len()];
        out.push_str(lead);
        out.push_str(name.trim());
        out.push('=');
        out.push_str(prefix);
        if value != "/" {
            out.push_str(value);
        }
        changed = true;
    }
    if add_missing && !has_path {
        out.push_str("; Path=");
        out.push_str(prefix);
        changed = true;
    }
    changed.then_some(out)
}

/// Replaces every occurrence of `from` in `haystack` with `to`; `None` when there is none.
pub fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() || haystack.len() < from.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut last = 0;
    let mut index = 0;
    while index + from.len() <= haystack.len() {
        if &haystack[index..index + from.len()] == from {
            out.extend_from_slice(&haystack[last..index]);
            out.extend_from_slice(to);
            index += from.len();
            last = index;
        } else {
            index += 1;
        }
    }
    if last == 0 {
        return None;
    }
    out.extend_from_slice(&haystack[last..]);
    Some(out)
}

/// HTML whose root-relative URL attributes (`href`, `src`, `action`, `formaction`) are moved
/// under the prefix, or `None` when there are none.
///
/// Links an app renders from its own root (`<a href="/about">`, Flask's `url_for` without
/// `ProxyFix`) would otherwise leave the prefix. Relative URLs, protocol-relative and absolute
/// URLs, and values already under the prefix are left alone.
pub fn prefix_html_urls(html: &[u8], prefix: &str) -> Option<Vec<u8>> {
    const ATTRS: [&[u8]; 4] = [b"href", b"src", b"action", b"formaction"];
    let mut out = Vec::with_capacity(html.len() + 256);
    let mut last = 0;
    let mut index = 0;
    while index < html.len() {
        let byte = html[index];
        index += 1;
        if !byte.is_ascii_whitespace() {
            continue;
        }
        for attr in ATTRS {
            let Some(value_start) = attribute_value_start(html, index, attr) else {
                continue;
            };
            let value = &html[value_start..];
            let root_relative = value.first() == Some(&b'/') && value.get(1) != Some(&b'/');
            let already = value.strip_prefix(prefix.as_bytes()).is_some_and(|rest| {
                matches!(rest.first(), None | Some(b'/' | b'?' | b'#' | b'"' | b'\''))
            });
            if root_relative && !already {
                out.extend_from_slice(&html[last..value_start]);
                out.extend_from_slice(prefix.as_bytes());
                last = value_start;
            }
            index = value_start;
            break;
        }
    }
    if last == 0 {
        return None;
    }
    out.extend_from_slice(&html[last..]);
    Some(out)
}

/// Where a quoted value starts when `html[at..]` is `attr="` or `attr='` (name case-insensitive).
fn attribute_value_start(html: &[u8], at: usize, attr: &[u8]) -> Option<usize> {
    let end = at + attr.len();
    let name = html.get(at..end)?;
    if !name.eq_ignore_ascii_case(attr) || html.get(end) != Some(&b'=') {
        return None;
    }
    matches!(html.get(end + 1), Some(b'"' | b'\'')).then_some(end + 2)
}

/// `text` escaped for the inside of a JSON string in an HTML `<script>`: quotes, backslashes,
/// control characters and `<` (so no `</script>` can close the element early).
pub fn json_string_body(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The most bytes [`stream_cut`] leaves for a later chunk: the host's limit on held bytes.
pub const MAX_HELD: usize = 64 * 1024;

/// How many leading bytes of a streamed chunk can be rewritten now, for rewrites that work
/// within a line or a tag: all of them on the `last` chunk; otherwise up to and including the
/// last `\n` or `>` (0 when there is none), so that a tag or URL cut by the chunk's end waits
/// for the next chunk. At most [`MAX_HELD`] bytes are left, so a very long line is rewritten
/// in pieces.
pub fn stream_cut(chunk: &[u8], last: bool) -> usize {
    if last {
        return chunk.len();
    }
    let boundary = chunk
        .iter()
        .rposition(|byte| matches!(byte, b'\n' | b'>'))
        .map_or(0, |index| index + 1);
    boundary.max(chunk.len().saturating_sub(MAX_HELD))
}

/// The media type of a `Content-Type` value, lower case, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_chunks_are_cut_after_the_last_line_or_tag() {
        assert_eq!(stream_cut(b"<a href=\"/x\">text<img sr", false), 13);
        assert_eq!(stream_cut(b"line one\nline tw", false), 9);
        assert_eq!(stream_cut(b"no boundary", false), 0);
        assert_eq!(stream_cut(b"no boundary", true), 11);
        assert_eq!(stream_cut(b"", false), 0);
        let long = vec![b'x'; MAX_HELD + 10];
        assert_eq!(stream_cut(&long, false), 10, "at most MAX_HELD left");
    }

    #[test]
    fn json_string_bodies_cannot_close_the_script() {
        assert_eq!(json_string_body(r#"/a"b\c</"#), r#"/a\"b\\c\u003c/"#);
        assert_eq!(json_string_body("a\nb"), "a\\u000ab");
    }

    const P: &str = "/proxy/app";
    const HOST: &str = "portal.example:8080";

    #[test]
    fn strips_or_keeps_prefix() {
        assert_eq!(upstream_path("/a/b", P, false), "/a/b");
        assert_eq!(upstream_path("/a/b", P, true), "/proxy/app/a/b");
    }

    #[test]
    fn prefix_match_respects_segments() {
        assert!(has_prefix("/proxy/app", P));
        assert!(has_prefix("/proxy/app/", P));
        assert!(has_prefix("/proxy/app?x=1", P));
        assert!(!has_prefix("/proxy/apple/", P));
        assert!(!has_prefix("/other", P));
    }

    #[test]
    fn root_relative_location_gets_prefix_once() {
        assert_eq!(
            prefix_location("/login", P, HOST).as_deref(),
            Some("/proxy/app/login")
        );
        assert_eq!(
            prefix_location("/", P, HOST).as_deref(),
            Some("/proxy/app/")
        );
        assert_eq!(prefix_location("/proxy/app/login", P, HOST), None);
        assert_eq!(
            prefix_location("/proxy/apple", P, HOST).as_deref(),
            Some("/proxy/app/proxy/apple")
        );
    }

    #[test]
    fn relative_and_foreign_locations_stay() {
        assert_eq!(prefix_location("login", P, HOST), None);
        assert_eq!(prefix_location("../up", P, HOST), None);
        assert_eq!(
            prefix_location("https://elsewhere.example/x", P, HOST),
            None
        );
        assert_eq!(prefix_location("//elsewhere.example/x", P, HOST), None);
    }

    #[test]
    fn absolute_location_on_public_host_gets_prefix() {
        assert_eq!(
            prefix_location("http://portal.example:8080/items/", P, HOST).as_deref(),
            Some("http://portal.example:8080/proxy/app/items/")
        );
        assert_eq!(
            prefix_location("HTTPS://Portal.Example:8080?q=1", P, HOST).as_deref(),
            Some("HTTPS://Portal.Example:8080/proxy/app/?q=1")
        );
        assert_eq!(
            prefix_location("http://portal.example:8080/proxy/app/x", P, HOST),
            None
        );
        assert_eq!(
            prefix_location("//portal.example:8080/x", P, HOST).as_deref(),
            Some("//portal.example:8080/proxy/app/x")
        );
    }

    #[test]
    fn cookie_path_is_scoped_and_value_untouched() {
        assert_eq!(
            scope_cookie_path("_xsrf=2|ab%3D; Path=/; HttpOnly", P).as_deref(),
            Some("_xsrf=2|ab%3D; Path=/proxy/app; HttpOnly")
        );
        assert_eq!(
            scope_cookie_path("s=1; path=/api", P).as_deref(),
            Some("s=1; path=/proxy/app/api")
        );
        assert_eq!(scope_cookie_path("s=1; Path=/proxy/app", P), None);
        assert_eq!(scope_cookie_path("s=1; HttpOnly", P), None);
        assert_eq!(scope_cookie_path("path=/; Max-Age=3", P), None);
        assert_eq!(
            scope_cookie_path("s=1;Path = / ;Secure", P).as_deref(),
            Some("s=1;Path=/proxy/app;Secure")
        );
        assert_eq!(
            scope_cookie_path("s=1; PATH=/x", P).as_deref(),
            Some("s=1; PATH=/proxy/app/x")
        );
    }

    #[test]
    fn cookies_of_unprefixed_requests_get_a_path() {
        assert_eq!(
            scope_cookie_path_always("s=1; HttpOnly", P).as_deref(),
            Some("s=1; HttpOnly; Path=/proxy/app")
        );
        assert_eq!(scope_cookie_path_always("s=1; Path=/proxy/app/x", P), None);
        assert_eq!(
            scope_cookie_path_always("s=1; Path=/", P).as_deref(),
            Some("s=1; Path=/proxy/app")
        );
    }

    #[test]
    fn replaces_every_occurrence() {
        assert_eq!(
            replace_bytes(b"a-x-a", b"a", b"bb"),
            Some(b"bb-x-bb".to_vec())
        );
        assert_eq!(replace_bytes(b"xyz", b"a", b"b"), None);
        assert_eq!(replace_bytes(b"", b"a", b"b"), None);
    }

    #[test]
    fn media_type_drops_parameters() {
        assert_eq!(media_type("Text/HTML; charset=utf-8"), "text/html");
        assert_eq!(media_type(""), "");
    }

    #[test]
    fn html_root_relative_urls_get_prefix() {
        let html = br#"<a href="/about">a</a> <img SRC='/static/x.png'> <form action="/post">
<a href="rel">r</a> <a href="//cdn.example/x">c</a> <a href="/proxy/app/in">i</a>
<link href="https://x.example/">"#;
        let out = prefix_html_urls(html, P).expect("rewritten");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(out.contains(r#"href="/proxy/app/about""#), "{out}");
        assert!(out.contains("SRC='/proxy/app/static/x.png'"), "{out}");
        assert!(out.contains(r#"action="/proxy/app/post""#), "{out}");
        assert!(out.contains(r#"href="rel""#), "{out}");
        assert!(out.contains(r#"href="//cdn.example/x""#), "{out}");
        assert!(out.contains(r#"href="/proxy/app/in""#), "{out}");
        assert!(out.contains(r#"href="https://x.example/""#), "{out}");
        assert_eq!(prefix_html_urls(b"<p>no links</p>", P), None);
    }
}
