//! The Voila plugin.
//!
//! Voila 0.5 renders a notebook into a page whose JupyterLab frontend takes every URL from the
//! page config (`<script id="jupyter-config-data">`): `"baseUrl": "/"` for the kernel API and
//! the kernel WebSocket (`api/kernels/{id}/channels`), and `"fullStaticUrl": "/voila/static"`,
//! `"fullLabextensionsUrl": "/voila/labextensions"` and `"themesUrl": "/voila/api/themes"` for
//! its code, widget extensions and themes; its `<link>` and `<script>` tags name
//! `/voila/templates/...` and `/voila/static/...` from the root too. Behind a stripped prefix
//! all of them (about a hundred requests) would leave the prefix, and the kernel WebSocket,
//! which carries no `Referer`, would be routed by the affinity cookie alone, which names
//! whichever Jupyter-type app was opened last. The plugin rewrites the page so that every URL
//! carries the prefix, and moves the `report-uri` of Voila's Content-Security-Policy under it.
//!
//! Facts for a proxy, read from Voila 0.5.13 (`voila/app.py`, the `lab` template):
//! - default port 8866; no health endpoint: `GET /` starts a kernel and runs the notebook, so
//!   readiness is probed on the static `GET /voila/static/voila.js`;
//! - the page is streamed while the notebook runs: the head and the page config first, then
//!   each cell's output as it is computed. The plugin therefore rewrites it as it streams
//!   (`rewrite-chunk`), so the page shows progress through Portico as it does directly;
//! - `Set-Cookie: username-{host}-{port}=…; Path=/` (scoped to the prefix by the SDK's default);
//! - the `lab` template loads Font Awesome from a public CDN, outside any prefix.

use portico_plugin_sdk::{
    BodyRewrite, ChunkRewrite, Header, OrphanRequest, Plugin, PluginInfo, Response, ResponsePlan,
    claim_by_prefix, defaults, export_plugin, header, rewrite,
};

/// The Voila handler.
#[derive(Debug)]
pub struct Voila;

/// The largest page rewritten: a notebook's outputs are inlined, so pages with plots are large.
const MAX_PAGE: u32 = 16 * 1024 * 1024;

/// The keys of Voila's page config that hold root-relative URLs.
const CONFIG_URLS: [&str; 5] = [
    "baseUrl",
    "fullStaticUrl",
    "fullLabextensionsUrl",
    "themesUrl",
    "fullMathjaxUrl",
];

/// Voila's un-prefixed paths and how strongly each belongs to it: its own `/voila/` routes
/// above its kernel API, which a Jupyter server serves at the same paths. Only a page that was
/// not rewritten (cached, or larger than the rewrite limit) makes such requests.
const CLAIMS: [(&str, u32); 2] = [("/voila/", 100), (KERNELS, 20)];

/// The kernel API, declared as the Jupyter plugin declares it: Portico prefers the longest
/// declared prefix, so a longer one here would take Jupyter's kernel requests from it, while
/// an equal one leaves the choice to the scores.
const KERNELS: &str = "/api/kernels";

impl Plugin for Voila {
    fn info() -> PluginInfo {
        PluginInfo::new("voila", env!("CARGO_PKG_VERSION"))
            .service_types(&["voila"])
            .default_port(8866)
            .health_path("/voila/static/voila.js")
            .detect(&["voila"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
            .response_headers(&["location", "set-cookie", "content-security-policy"])
            .rewrite_bodies(&["text/html"], MAX_PAGE)
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        let mut headers = defaults::response_headers(&resp);
        let prefix = &resp.request.prefix;
        if let Some(policy) = header(&resp.headers, "content-security-policy")
            .and_then(|policy| report_uri_under(policy, prefix))
        {
            headers
                .set
                .push(Header::new("content-security-policy", policy));
        }
        ResponsePlan {
            headers,
            body: if defaults::media_type(&resp) == "text/html" {
                BodyRewrite::Streamed
            } else {
                BodyRewrite::Keep
            },
        }
    }

    fn rewrite_chunk(resp: Response, chunk: Vec<u8>, _: Vec<u8>, last: bool) -> ChunkRewrite {
        // Every URL `page` moves sits inside one tag or one config entry, which never holds a
        // line end or a `>`: a chunk cut after the last of those rewrites the same as a page.
        defaults::rewrite_chunk_with(chunk, last, |part| page(part, &resp.request.prefix))
    }
}

/// How strongly an un-prefixed path belongs to Voila.
pub fn claim_path(path: &str) -> u32 {
    match path.strip_prefix(KERNELS) {
        // `/api/kernelspecs` shares the declared prefix but is not Voila's.
        Some(rest) if !(rest.is_empty() || rest.starts_with('/')) => 0,
        _ => claim_by_prefix(&CLAIMS, path),
    }
}

/// The page with its config URLs and its root-relative tags under `prefix`, or `None` when it
/// has neither.
pub fn page(html: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut page = html.to_vec();
    let mut changed = false;
    for key in CONFIG_URLS {
        if let Some(next) = prefix_config_url(&page, key, prefix) {
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

/// `html` with the value of every `"key": "/…"` that is root-relative and not yet under
/// `prefix` moved under it (JSON with or without a space after the colon), or `None`.
fn prefix_config_url(html: &[u8], key: &str, prefix: &str) -> Option<Vec<u8>> {
    let needle = format!("\"{key}\":");
    let needle = needle.as_bytes();
    let escaped = rewrite::json_string_body(prefix);
    let mut out = Vec::with_capacity(html.len() + 64);
    let mut last = 0;
    let mut from = 0;
    while let Some(found) = find(&html[from..], needle) {
        let mut at = from + found + needle.len();
        while html.get(at) == Some(&b' ') {
            at += 1;
        }
        from = at;
        if html.get(at) != Some(&b'"') {
            continue;
        }
        let value = &html[at + 1..];
        let root_relative = value.first() == Some(&b'/') && value.get(1) != Some(&b'/');
        let already = value
            .strip_prefix(escaped.as_bytes())
            .is_some_and(|rest| matches!(rest.first(), Some(b'/' | b'"')));
        if root_relative && !already {
            out.extend_from_slice(&html[last..=at]);
            out.extend_from_slice(escaped.as_bytes());
            last = at + 1;
        }
    }
    if last == 0 {
        return None;
    }
    out.extend_from_slice(&html[last..]);
    Some(out)
}

/// A Content-Security-Policy whose root-relative `report-uri` is moved under `prefix`, or
/// `None` when it has none to move.
pub fn report_uri_under(policy: &str, prefix: &str) -> Option<String> {
    let mut changed = false;
    let directives: Vec<String> = policy
        .split(';')
        .map(|directive| {
            let trimmed = directive.trim_start();
            let lead = &directive[..directive.len() - trimmed.len()];
            let Some(uris) = trimmed.strip_prefix("report-uri ") else {
                return directive.to_owned();
            };
            let uris: Vec<String> = uris
                .split(' ')
                .map(|uri| {
                    if uri.starts_with('/')
                        && !uri.starts_with("//")
                        && !rewrite::has_prefix(uri, prefix)
                    {
                        changed = true;
                        format!("{prefix}{uri}")
                    } else {
                        uri.to_owned()
                    }
                })
                .collect();
            format!("{lead}report-uri {}", uris.join(" "))
        })
        .collect();
    changed.then(|| directives.join(";"))
}

/// The first index of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

export_plugin!(Voila);

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proxy/v";

    /// The head of a page Voila 0.5.13 rendered, as it arrives from the app.
    const PAGE: &str = r##"<link rel="icon" type="image/x-icon" href="data:;base64,=">
<link href="/voila/templates/lab/static/index.css?v=ee8d" rel="stylesheet" type='text/css'>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css" type="text/css" />
<script src="/voila/static/voila.js"></script>
<script id="jupyter-config-data" type="application/json">
  {"appUrl": "voila/", "appVersion": "0.5.13", "baseUrl": "/", "federated_extensions": [{"load": "static/remoteEntry.5cbb.js", "name": "jupyterlab_pygments"}], "fullLabextensionsUrl": "/voila/labextensions", "fullMathjaxUrl": null, "fullStaticUrl": "/voila/static", "kernelId": "ec54", "themesUrl": "/voila/api/themes"}
</script>
<a class="anchor-link" href="#Portico-Voila-test">"##;

    fn rewritten(page_text: &str) -> String {
        String::from_utf8(page(page_text.as_bytes(), P).expect("changed")).expect("utf-8")
    }

    #[test]
    fn page_config_points_under_prefix() {
        let out = rewritten(PAGE);
        assert!(out.contains(r#""baseUrl": "/proxy/v/""#), "{out}");
        assert!(
            out.contains(r#""fullStaticUrl": "/proxy/v/voila/static""#),
            "{out}"
        );
        assert!(
            out.contains(r#""fullLabextensionsUrl": "/proxy/v/voila/labextensions""#),
            "{out}"
        );
        assert!(
            out.contains(r#""themesUrl": "/proxy/v/voila/api/themes""#),
            "{out}"
        );
        // Relative and empty values stay as they are.
        assert!(out.contains(r#""appUrl": "voila/""#), "{out}");
        assert!(out.contains(r#""fullMathjaxUrl": null"#), "{out}");
        assert!(
            out.contains(r#""load": "static/remoteEntry.5cbb.js""#),
            "{out}"
        );
    }

    #[test]
    fn tags_point_under_prefix_and_others_stay() {
        let out = rewritten(PAGE);
        assert!(
            out.contains(r#"href="/proxy/v/voila/templates/lab/static/index.css?v=ee8d""#),
            "{out}"
        );
        assert!(
            out.contains(r#"src="/proxy/v/voila/static/voila.js""#),
            "{out}"
        );
        assert!(out.contains(r#"href="https://cdn.jsdelivr.net/"#), "{out}");
        assert!(out.contains(r##"href="#Portico-Voila-test""##), "{out}");
        assert!(out.contains(r#"href="data:;base64,=""#), "{out}");
    }

    #[test]
    fn a_rewritten_page_is_not_prefixed_twice() {
        let once = rewritten(PAGE);
        assert_eq!(page(once.as_bytes(), P), None);
    }

    #[test]
    fn compact_json_and_a_configured_base_url() {
        let compact = r#"{"baseUrl":"/","fullStaticUrl":"/voila/static"}"#;
        assert_eq!(
            rewritten(compact),
            r#"{"baseUrl":"/proxy/v/","fullStaticUrl":"/proxy/v/voila/static"}"#
        );
        // An app started with `--Voila.base_url=/proxy/v/` already names the prefix.
        let kept = r#"{"baseUrl": "/proxy/v/", "fullStaticUrl": "/proxy/v/voila/static"}"#;
        assert_eq!(page(kept.as_bytes(), P), None);
        // A prefix that merely starts the same is not "already under" it.
        let other = r#"{"baseUrl": "/proxy/v2/"}"#;
        assert_eq!(rewritten(other), r#"{"baseUrl": "/proxy/v/proxy/v2/"}"#);
    }

    #[test]
    fn the_prefix_is_escaped_for_json() {
        let out = String::from_utf8(page(br#"{"baseUrl": "/"}"#, "/proxy/a\"b").expect("changed"))
            .expect("utf-8");
        assert_eq!(out, r#"{"baseUrl": "/proxy/a\"b/"}"#);
    }

    #[test]
    fn a_page_without_urls_is_left_alone() {
        assert_eq!(page(b"<p>no config</p>", P), None);
    }

    #[test]
    fn csp_report_uri_moves_under_prefix() {
        assert_eq!(
            report_uri_under(
                "frame-ancestors 'self'; report-uri /api/security/csp-report",
                P
            )
            .as_deref(),
            Some("frame-ancestors 'self'; report-uri /proxy/v/api/security/csp-report")
        );
        assert_eq!(
            report_uri_under("frame-ancestors 'self'; report-uri /proxy/v/api/x", P),
            None
        );
        assert_eq!(report_uri_under("frame-ancestors 'self'", P), None);
        assert_eq!(
            report_uri_under("report-uri https://reports.example/csp", P),
            None
        );
    }

    #[test]
    fn claims_its_own_paths() {
        assert_eq!(claim_path("/voila/static/voila.js"), 100);
        assert_eq!(claim_path("/api/kernels/ec54/channels"), 20);
        assert_eq!(claim_path("/api/kernels"), 20);
        assert_eq!(claim_path("/api/kernelspecs"), 0);
        assert_eq!(claim_path("/static/js/main.js"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Voila::info().claim_prefixes;
        assert_eq!(declared, ["/voila/", "/api/kernels"]);
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
