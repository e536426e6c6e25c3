//! The Dash plugin.
//!
//! Dash's index page embeds its config with `"requests_pathname_prefix":"/"` and loads its
//! scripts from absolute `/_dash-component-suites/` URLs, so behind a stripped prefix every
//! layout, dependency and callback request would leave the prefix. The plugin rewrites the page
//! so they come back under it, and claims un-prefixed `/_dash-*` and `/assets/` requests that
//! still arrive (from a cached page, say).

use portico_plugin_sdk::{
    OrphanRequest, Plugin, PluginInfo, Response, ResponsePlan, claim_by_prefix, defaults,
    export_plugin, rewrite,
};

/// The Dash handler.
#[derive(Debug)]
pub struct Dash;

/// The largest page rewritten.
const MAX_PAGE: u32 = 4 * 1024 * 1024;

/// Dash's un-prefixed paths and how strongly each belongs to it: its `_dash-` endpoints and
/// component suites above its icon and hot-reload hash, above `/assets/`, which other
/// frameworks serve too. The prefixes are declared in `info`, so Portico offers Dash no other
/// path.
const CLAIMS: [(&str, u32); 4] = [
    ("/_dash-", 100),
    ("/_favicon.ico", 60),
    ("/_reload-hash", 60),
    ("/assets/", 30),
];

impl Plugin for Dash {
    fn info() -> PluginInfo {
        PluginInfo::new("dash", env!("CARGO_PKG_VERSION"))
            .service_types(&["dash"])
            .default_port(8050)
            .health_path("/_dash-layout")
            .detect(&["dash", "plotly"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
            .rewrite_bodies(&["text/html"], MAX_PAGE)
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        defaults::on_html_response(&resp)
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        index_page(&body, &resp.request.prefix)
    }
}

/// How strongly an un-prefixed path belongs to Dash.
pub fn claim_path(path: &str) -> u32 {
    claim_by_prefix(&CLAIMS, path)
}

/// The index page with Dash's request prefix and its absolute URLs under `prefix`.
pub fn index_page(html: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut page = html.to_vec();
    let mut changed = false;
    // Dash serialises its config with Flask's HTML-safe JSON, which writes `/` as `\u002f`
    // (a plain `/` is handled too); the replacement keeps the style it finds.
    let key = r#""requests_pathname_prefix":"#;
    let mut edits: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for slash in ["/", r"\u002f"] {
        let value = rewrite::json_string_body(&format!("{prefix}/")).replace('/', slash);
        edits.push((
            format!(r#"{key}"{slash}""#).into_bytes(),
            format!(r#"{key}"{value}""#).into_bytes(),
        ));
    }
    for path in ["/_dash-", "/assets/", "/_favicon.ico"] {
        edits.push((
            format!("\"{path}").into_bytes(),
            format!("\"{prefix}{path}").into_bytes(),
        ));
    }
    for (from, to) in edits {
        if let Some(next) = rewrite::replace_bytes(&page, &from, &to) {
            page = next;
            changed = true;
        }
    }
    if let Some(next) = rewrite::prefix_html_urls(&page, prefix) {
        page = next;
        changed = true;
    }
    changed.then_some(page)
}

export_plugin!(Dash);

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &[u8] = br#"<link rel="icon" href="/_favicon.ico?v=2.18.0">
<script id="_dash-config" type="application/json">{"url_base_pathname":null,"requests_pathname_prefix":"/","ui":false}</script>
<script src="/_dash-component-suites/dash/deps/polyfill@7.v2_18_0m1.min.js"></script>"#;

    #[test]
    fn index_page_points_under_prefix() {
        let out = String::from_utf8(index_page(PAGE, "/proxy/d").expect("changed")).expect("utf-8");
        assert!(
            out.contains(r#""requests_pathname_prefix":"/proxy/d/""#),
            "{out}"
        );
        assert!(
            out.contains(r#"src="/proxy/d/_dash-component-suites/dash/"#),
            "{out}"
        );
        assert!(
            out.contains(r#"href="/proxy/d/_favicon.ico?v=2.18.0""#),
            "{out}"
        );
        assert!(!out.contains("/proxy/d/proxy/d"), "prefixed twice: {out}");
    }

    #[test]
    fn index_page_of_dash_4_with_escaped_slashes() {
        // Dash 4 writes the config with `/` escaped as `\u002f`.
        let page = br#"<script id="_dash-config" type="application/json">{"url_base_pathname":null,"requests_pathname_prefix":"\u002f","ui":false}</script>"#;
        let out = String::from_utf8(index_page(page, "/proxy/d").expect("changed")).expect("utf-8");
        assert!(
            out.contains(r#""requests_pathname_prefix":"\u002fproxy\u002fd\u002f""#),
            "{out}"
        );
    }

    #[test]
    fn claims_dash_paths() {
        assert_eq!(claim_path("/_dash-update-component"), 100);
        assert_eq!(claim_path("/assets/style.css"), 30);
        assert_eq!(claim_path("/_stcore/health"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Dash::info().claim_prefixes;
        assert_eq!(
            declared,
            ["/_dash-", "/_favicon.ico", "/_reload-hash", "/assets/"]
        );
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
