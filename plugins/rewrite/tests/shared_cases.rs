//! The cases of `tests/cases.json`, which the Python SDK's tests run against its port of these
//! rules, run against this crate: both implementations give the same answers.

use portico_rewrite as rewrite;
use serde_json::{Map, Value};

/// Every section of the file, so that a section added there without a runner here fails.
const SECTIONS: [&str; 11] = [
    "upstream_path",
    "has_prefix",
    "prefix_location",
    "scope_cookie_path",
    "scope_cookie_path_always",
    "replace_bytes",
    "prefix_html_urls",
    "json_string_body",
    "media_type",
    "stream_cut",
    "about",
];

fn cases() -> Map<String, Value> {
    let text = include_str!("cases.json");
    match serde_json::from_str(text).expect("cases.json is JSON") {
        Value::Object(sections) => sections,
        other => panic!("cases.json holds an object, not {other}"),
    }
}

/// Runs `check` on each case of `section`, of which there must be some.
fn each(section: &str, check: impl Fn(&Value)) {
    let sections = cases();
    let list = sections[section].as_array().expect("a section is a list");
    assert!(!list.is_empty(), "{section} has no cases");
    for case in list {
        check(case);
    }
}

fn text<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is a string in {case}"))
}

fn flag(case: &Value, name: &str) -> bool {
    case[name]
        .as_bool()
        .unwrap_or_else(|| panic!("{name} is a bool in {case}"))
}

/// A bytes value as the file writes it: a string, a repeated string, hex, or a list of those.
fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(text) => text.as_bytes().to_vec(),
        Value::Array(pieces) => pieces.iter().flat_map(bytes).collect(),
        Value::Object(piece) if piece.contains_key("repeat") => {
            let unit = piece["repeat"].as_str().expect("repeat is a string");
            let times = piece["times"].as_u64().expect("times is a count");
            unit.repeat(usize::try_from(times).expect("times fits"))
                .into_bytes()
        }
        Value::Object(piece) => {
            let hex = piece["hex"].as_str().expect("a piece is repeat or hex");
            (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex digits"))
                .collect()
        }
        other => panic!("not a bytes value: {other}"),
    }
}

fn expect_text(case: &Value) -> Option<&str> {
    (!case["expect"].is_null()).then(|| text(case, "expect"))
}

fn expect_bytes(case: &Value) -> Option<Vec<u8>> {
    (!case["expect"].is_null()).then(|| bytes(&case["expect"]))
}

#[test]
fn the_file_has_a_runner_for_each_section() {
    let sections = cases();
    let mut found: Vec<&str> = sections.keys().map(String::as_str).collect();
    found.sort_unstable();
    let mut known = SECTIONS.to_vec();
    known.sort_unstable();
    assert_eq!(found, known);
}

#[test]
fn upstream_path() {
    each("upstream_path", |case| {
        let got = rewrite::upstream_path(
            text(case, "path"),
            text(case, "prefix"),
            flag(case, "keep_prefix"),
        );
        assert_eq!(Some(got.as_str()), expect_text(case), "{case}");
    });
}

#[test]
fn has_prefix() {
    each("has_prefix", |case| {
        let got = rewrite::has_prefix(text(case, "path"), text(case, "prefix"));
        assert_eq!(got, flag(case, "expect"), "{case}");
    });
}

#[test]
fn prefix_location() {
    each("prefix_location", |case| {
        let got = rewrite::prefix_location(
            text(case, "location"),
            text(case, "prefix"),
            text(case, "public_host"),
        );
        assert_eq!(got.as_deref(), expect_text(case), "{case}");
    });
}

#[test]
fn scope_cookie_path() {
    each("scope_cookie_path", |case| {
        let got = rewrite::scope_cookie_path(text(case, "set_cookie"), text(case, "prefix"));
        assert_eq!(got.as_deref(), expect_text(case), "{case}");
    });
}

#[test]
fn scope_cookie_path_always() {
    each("scope_cookie_path_always", |case| {
        let got = rewrite::scope_cookie_path_always(text(case, "set_cookie"), text(case, "prefix"));
        assert_eq!(got.as_deref(), expect_text(case), "{case}");
    });
}

#[test]
fn replace_bytes() {
    each("replace_bytes", |case| {
        let got = rewrite::replace_bytes(
            &bytes(&case["haystack"]),
            &bytes(&case["from"]),
            &bytes(&case["to"]),
        );
        assert_eq!(got, expect_bytes(case), "{case}");
    });
}

#[test]
fn prefix_html_urls() {
    each("prefix_html_urls", |case| {
        let got = rewrite::prefix_html_urls(&bytes(&case["html"]), text(case, "prefix"));
        assert_eq!(got, expect_bytes(case), "{case}");
    });
}

#[test]
fn json_string_body() {
    each("json_string_body", |case| {
        let got = rewrite::json_string_body(text(case, "text"));
        assert_eq!(Some(got.as_str()), expect_text(case), "{case}");
    });
}

#[test]
fn media_type() {
    each("media_type", |case| {
        let got = rewrite::media_type(text(case, "content_type"));
        assert_eq!(Some(got.as_str()), expect_text(case), "{case}");
    });
}

#[test]
fn stream_cut() {
    each("stream_cut", |case| {
        let chunk = bytes(&case["chunk"]);
        let got = rewrite::stream_cut(&chunk, flag(case, "last"));
        let expect = case["expect"].as_u64().expect("a count");
        // The chunk itself can be 64 KiB long: say its length and the note instead.
        assert_eq!(
            u64::try_from(got).ok(),
            Some(expect),
            "{} bytes, last {}, {}",
            chunk.len(),
            case["last"],
            case["note"]
        );
    });
}
