//! The FastAPI plugin.
//!
//! API routes work with the prefix stripped. What breaks is the app's view of its own root:
//! slash redirects are absolute URLs on the public host without the prefix (fixed by the SDK's
//! `Location` default), the docs pages load `/openapi.json` and their assets from the root, and
//! Swagger UI's "Try it out" calls the root unless the schema names a server.

use portico_plugin_sdk::{
    BodyRewrite, Plugin, PluginInfo, Response, ResponsePlan, defaults, export_plugin, rewrite,
};

/// The FastAPI handler.
#[derive(Debug)]
pub struct FastApi;

/// The largest docs page or schema rewritten.
const MAX_BODY: u32 = 8 * 1024 * 1024;

impl Plugin for FastApi {
    fn info() -> PluginInfo {
        PluginInfo::new("fastapi", env!("CARGO_PKG_VERSION"))
            .service_types(&["fastapi"])
            .default_port(8000)
            .detect(&["uvicorn", "fastapi", "hypercorn"])
            .rewrite_bodies(&["text/html", "application/json"], MAX_BODY)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        let media = defaults::media_type(&resp);
        ResponsePlan {
            headers: defaults::response_headers(&resp),
            body: if media == "text/html"
                || (media == "application/json" && is_schema(&resp.request.path))
            {
                BodyRewrite::Whole
            } else {
                BodyRewrite::Keep
            },
        }
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        let prefix = &resp.request.prefix;
        if is_schema(&resp.request.path) {
            add_server(&body, prefix)
        } else {
            docs_page(&body, prefix)
        }
    }
}

fn is_schema(path: &str) -> bool {
    path.ends_with("/openapi.json")
}

/// The docs page with its schema URL, OAuth redirect and root-relative assets under the prefix.
pub fn docs_page(html: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut page = html.to_vec();
    for url in ["/openapi.json", "/docs/oauth2-redirect"] {
        for quote in ["'", "\""] {
            let from = format!("{quote}{url}{quote}");
            let to = format!("{quote}{prefix}{url}{quote}");
            if let Some(next) = rewrite::replace_bytes(&page, from.as_bytes(), to.as_bytes()) {
                page = next;
                changed = true;
            }
        }
    }
    if let Some(next) = rewrite::prefix_html_urls(&page, prefix) {
        page = next;
        changed = true;
    }
    changed.then_some(page)
}

/// The OpenAPI schema with `servers: [{url: prefix}]` when it names no server, so that Swagger
/// UI's calls go through the prefix (what FastAPI itself does when given a `root_path`).
pub fn add_server(schema: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let start = schema.iter().position(|byte| !byte.is_ascii_whitespace())?;
    if schema[start] != b'{' || contains(schema, b"\"servers\"") {
        return None;
    }
    let escaped = prefix.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = Vec::with_capacity(schema.len() + escaped.len() + 32);
    out.extend_from_slice(&schema[..=start]);
    out.extend_from_slice(format!("\"servers\":[{{\"url\":\"{escaped}\"}}],").as_bytes());
    out.extend_from_slice(&schema[start + 1..]);
    Some(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

export_plugin!(FastApi);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_page_points_under_prefix() {
        let html = br#"<script src="/static/swagger-ui-bundle.js"></script>
url: '/openapi.json', oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect',"#;
        let out =
            String::from_utf8(docs_page(html, "/proxy/api").expect("changed")).expect("utf-8");
        assert!(out.contains("url: '/proxy/api/openapi.json'"), "{out}");
        assert!(out.contains("'/proxy/api/docs/oauth2-redirect'"), "{out}");
        assert!(
            out.contains(r#"src="/proxy/api/static/swagger-ui-bundle.js""#),
            "{out}"
        );
    }

    #[test]
    fn schema_gets_a_server_once() {
        let out = add_server(br#" {"openapi":"3.1.0"}"#, "/proxy/api").expect("changed");
        assert_eq!(
            out,
            br#" {"servers":[{"url":"/proxy/api"}],"openapi":"3.1.0"}"#
        );
        assert_eq!(
            add_server(br#"{"servers":[],"openapi":"3.1.0"}"#, "/p"),
            None
        );
        assert_eq!(add_server(b"[]", "/p"), None);
    }
}
