//! URL path rules that keep every request inside its service: normalisation of the client's
//! path, the check on paths a plugin returns, and the one join of an upstream base and a path.
//!
//! A path is handled as the client sent it, percent-encoding kept: `%2F` stays encoded and a
//! segment's bytes are never re-encoded. Only dot segments are resolved, with `%2e`/`%2E`
//! counted as dots, because that is what an upstream would resolve them as.

use std::borrow::Cow;

/// Why a path (or query) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotOriginForm,
    #[error("the {what} is {len} bytes, over the limit of {limit}")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("the {what} contains byte 0x{byte:02x}, which must be percent-encoded")]
    ForbiddenByte { what: &'static str, byte: u8 },
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path climbs above the root of the service with `..`")]
    Climbs,
    #[error("the path contains a dot segment (`.` or `..`)")]
    DotSegment,
    #[error("the path hides a dot segment behind an encoded slash (`%2F`)")]
    HiddenDotSegment,
}

/// What one segment is, once `%2e` is read as a dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Plain,
    Dot,
    DotDot,
}

fn classify(segment: &str) -> Segment {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return Segment::Plain;
        }
        dots += 1;
    }
    match dots {
        1 => Segment::Dot,
        2 => Segment::DotDot,
        _ => Segment::Plain,
    }
}

/// Checks one segment for what may never pass: a backslash (raw or `%5C`), which some servers
/// read as a separator, and a dot segment hidden behind an encoded slash, which a server that
/// decodes `%2F` before resolving dots would climb with.
fn check_segment(segment: &str) -> Result<Segment, PathError> {
    let bytes = segment.as_bytes();
    let mut encoded_slash = false;
    for (index, byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' => return Err(PathError::Backslash),
            b'%' if bytes.len() >= index + 3 => {
                let code = [bytes[index + 1], bytes[index + 2] | 0x20];
                match &code {
                    b"5c" => return Err(PathError::Backslash),
                    b"2f" => encoded_slash = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if encoded_slash
        && split_encoded_slashes(segment).any(|piece| classify(piece) != Segment::Plain)
    {
        return Err(PathError::HiddenDotSegment);
    }
    Ok(classify(segment))
}

fn split_encoded_slashes(segment: &str) -> impl Iterator<Item = &str> {
    let mut rest = segment;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let at = (0..bytes.len().saturating_sub(2))
            .find(|&i| bytes[i] == b'%' && bytes[i + 1] == b'2' && (bytes[i + 2] | 0x20) == b'f');
        match at {
            Some(at) => {
                let piece = &rest[..at];
                rest = &rest[at + 3..];
                Some(piece)
            }
            None => {
                let piece = rest;
                rest = "";
                Some(piece)
            }
        }
    })
}

/// True when [`normalize`] has nothing to do: no segment starts with a dot, no empty segment,
/// no backslash, no encoded dot, slash or backslash. Most paths take this branch and are not
/// copied.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        let next = bytes.get(index + 1).copied();
        match byte {
            b'\\' => return false,
            b'/' if matches!(next, Some(b'.' | b'/')) => return false,
            b'%' => {
                let code = [
                    next.unwrap_or(0),
                    bytes.get(index + 2).map_or(0, |b| b | 0x20),
                ];
                if matches!(&code, b"2e" | b"2f" | b"5c") {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// The client's path with dot segments resolved (RFC 3986 §5.2.4, `%2e` read as a dot) and
/// runs of slashes merged. A path that would climb above `/` is refused, as is a backslash
/// (raw or encoded) and a dot segment hidden behind `%2F`. Every other byte is kept as sent.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            // `//` is merged; a final empty segment is the trailing slash.
            if segments.peek().is_none() {
                trailing_slash = true;
            }
            continue;
        }
        match check_segment(segment)? {
            Segment::Plain => {
                kept.push(segment);
                trailing_slash = false;
            }
            Segment::Dot => trailing_slash = true,
            Segment::DotDot => {
                if kept.pop().is_none() {
                    return Err(PathError::Climbs);
                }
                trailing_slash = true;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// Checks that `path` is origin-form and has nothing a join could climb with: no dot segment
/// (`.`, `..`, `%2e` forms, also behind `%2F`) and no backslash. Used on paths a plugin returns
/// and again by [`join`].
pub fn check_confined(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(PathError::NotOriginForm);
    }
    for segment in path[1..].split('/') {
        if check_segment(segment)? != Segment::Plain {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// Checks a path or query for the bytes a request target may carry as they are: visible ASCII.
/// Anything else must come percent-encoded.
pub fn check_bytes(what: &'static str, text: &str, limit: usize) -> Result<(), PathError> {
    if text.len() > limit {
        return Err(PathError::TooLong {
            what,
            len: text.len(),
            limit,
        });
    }
    match text.bytes().find(|b| !(0x21..0x7f).contains(b)) {
        Some(byte) => Err(PathError::ForbiddenByte { what, byte }),
        None => Ok(()),
    }
}

/// The upstream URI for `path` and `query` below `base`: `{scheme}://{authority}{base path}
/// {path}?{query}`. The path must pass [`check_confined`], so the result always lies below the
/// base's path; this is the only place the two are put together.
pub fn join(
    base: &url::Url,
    path: &str,
    query: Option<&str>,
) -> Result<axum::http::Uri, PathError> {
    check_confined(path)?;
    // `?` and `#` would end the path early (a fragment is dropped by the URI parser);
    // anything outside visible ASCII must come percent-encoded.
    let forbidden = |what: &'static str, text: &str, also: &[u8]| match text
        .bytes()
        .find(|b| !(0x21..0x7f).contains(b) || also.contains(b))
    {
        Some(byte) => Err(PathError::ForbiddenByte { what, byte }),
        None => Ok(()),
    };
    forbidden("path", path, b"?#")?;
    forbidden("query", query.unwrap_or_default(), b"#")?;
    let base_path = base.path().trim_end_matches('/');
    let authority = &base[url::Position::BeforeHost..url::Position::AfterPort];
    let mut text = String::with_capacity(
        base.scheme().len()
            + 3
            + authority.len()
            + base_path.len()
            + path.len()
            + 1
            + query.map_or(0, str::len),
    );
    text.push_str(base.scheme());
    text.push_str("://");
    text.push_str(authority);
    text.push_str(base_path);
    text.push_str(path);
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    axum::http::Uri::from_maybe_shared(bytes::Bytes::from(text)).map_err(|_| {
        PathError::ForbiddenByte {
            what: "path",
            byte: b'?',
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_not_copied() {
        for path in ["/", "/a/b", "/a/b/", "/a.b/c.d", "/a%20b", "/static/x.js"] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_resolve_and_encoded_dots_count() {
        assert_eq!(norm("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/%2e%2E/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a/.%2e/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a//b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("//a").as_deref(), Ok("/a"));
        assert_eq!(norm("/.well-known/x").as_deref(), Ok("/.well-known/x"));
        assert_eq!(norm("/a/...").as_deref(), Ok("/a/..."));
        assert_eq!(norm("/a%2Fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(norm("/.."), Err(PathError::Climbs));
    }

    #[test]
    fn climbing_and_backslashes_are_refused() {
        for bad in [
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E./x",
            "/.%2e/x",
            "/a/b/../../../x",
        ] {
            assert_eq!(norm(bad), Err(PathError::Climbs), "{bad}");
        }
        for bad in ["/a\\b", "/..\\..\\x", "/a%5cb", "/a%5C..%5Cx"] {
            assert_eq!(norm(bad), Err(PathError::Backslash), "{bad}");
        }
        for bad in ["/a/..%2fx", "/a/%2e%2e%2Fx", "/x%2F..", "/x%2f.%2fy"] {
            assert_eq!(norm(bad), Err(PathError::HiddenDotSegment), "{bad}");
        }
        assert_eq!(norm("relative"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn confined_paths_have_no_dot_segments() {
        assert_eq!(check_confined("/a/b.c/"), Ok(()));
        for bad in ["/app/../../secret", "/./x", "/%2e%2e", "/a/.", "/a\\b"] {
            assert!(check_confined(bad).is_err(), "{bad}");
        }
        assert_eq!(check_confined("//evil/x"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn join_keeps_the_base() {
        let base = url::Url::parse("http://127.0.0.1:8501/base/").expect("url");
        let uri = join(&base, "/a%20b/c", Some("x=1&y")).expect("uri");
        assert_eq!(uri.to_string(), "http://127.0.0.1:8501/base/a%20b/c?x=1&y");
        let root = url::Url::parse("http://h:1").expect("url");
        assert_eq!(
            join(&root, "/", None).expect("uri").to_string(),
            "http://h:1/"
        );
        let with_query = url::Url::parse("http://h:1/?old=1").expect("url");
        assert_eq!(
            join(&with_query, "/x", None).expect("uri").to_string(),
            "http://h:1/x"
        );
        assert_eq!(join(&base, "/../secret", None), Err(PathError::DotSegment));
        assert!(join(&root, "/a#b", None).is_err());
        assert!(join(&root, "/a", Some("q#f")).is_err());
    }

    #[test]
    fn bytes_and_lengths() {
        assert_eq!(check_bytes("path", "/a%C3%A9", 100), Ok(()));
        assert_eq!(
            check_bytes("path", "/a\u{e9}", 100),
            Err(PathError::ForbiddenByte {
                what: "path",
                byte: 0xc3
            })
        );
        assert!(matches!(
            check_bytes("query", "aaaa", 3),
            Err(PathError::TooLong { .. })
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Paths made of the pieces that matter: dots, slashes, encoded dots and slashes,
        /// backslashes and plain letters.
        fn hostile_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/"),
                Just("."),
                Just(".."),
                Just("%2e"),
                Just("%2E"),
                Just("%2f"),
                Just("%5C"),
                Just("\\"),
                Just("a"),
                Just("b%20c"),
                Just("%"),
            ];
            proptest::collection::vec(piece, 0..16)
                .prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        fn base() -> impl Strategy<Value = url::Url> {
            prop_oneof![
                Just("http://up:1"),
                Just("http://up:1/base/"),
                Just("http://up:1/a/b"),
            ]
            .prop_map(|text| url::Url::parse(text).expect("url"))
        }

        /// What a server that decodes `%2F`, `%2E` and `%5C` and then resolves dot segments
        /// would make of a path: the strictest reading an upstream could give it.
        fn as_decoded_by_upstream(path: &str) -> String {
            let decoded = path
                .replace("%2f", "/")
                .replace("%2F", "/")
                .replace("%2e", ".")
                .replace("%2E", ".")
                .replace("%5c", "/")
                .replace("%5C", "/")
                .replace('\\', "/");
            url::Url::parse(&format!("http://x{decoded}"))
                .map(|url| url.path().to_owned())
                .unwrap_or_default()
        }

        proptest! {
            #[test]
            fn the_join_never_leaves_the_base(path in hostile_path(), base in base()) {
                let root = format!("{}/", base.path().trim_end_matches('/'));
                if let Ok(uri) = join(&base, &path, None) {
                    prop_assert!(uri.path().starts_with(&root), "{} from {path}", uri.path());
                    let decoded = as_decoded_by_upstream(uri.path());
                    prop_assert!(decoded.starts_with(&root), "{decoded} from {path}");
                }
            }

            #[test]
            fn normalised_paths_join_below_the_base(path in hostile_path(), base in base()) {
                let root = format!("{}/", base.path().trim_end_matches('/'));
                if let Ok(normal) = normalize(&path) {
                    prop_assert_eq!(check_confined(&normal), Ok(()));
                    let uri = join(&base, &normal, None).expect("a normal path joins");
                    prop_assert!(uri.path().starts_with(&root));
                    prop_assert!(as_decoded_by_upstream(uri.path()).starts_with(&root));
                    // Normalising twice changes nothing.
                    prop_assert_eq!(normalize(&normal).map(|p| p.into_owned()), Ok(normal.into_owned()));
                }
            }
        }
    }
}
