//! The Jupyter plugin: JupyterLab 4, Notebook 7 and Jupyter Server, with or without `base_url`.
//!
//! Jupyter Server builds every URL from its `base_url` (`/` unless told otherwise), and the
//! pages hand it to the frontend in `<script id="jupyter-config-data">`: `baseUrl`,
//! `frontendUrl` (Notebook 7) and the `full*Url` fields (`fullStaticUrl`, `fullSettingsUrl`,
//! ...). The frontend derives everything else from them: the webpack public path
//! (`fullStaticUrl`), the REST calls (`api/contents`, `api/kernels`, `api/sessions`, `lsp/`,
//! `lab/api/...`), the WebSockets (`api/kernels/{id}/channels` with subprotocol
//! `v1.kernel.websocket.jupyter.org`, `api/events/subscribe`, `terminals/websocket/{name}`,
//! from `baseUrl` since `wsUrl` is empty), and its router, which strips `baseUrl` from the page
//! path and pushes `baseUrl` + `lab/...`. The shorter `*Url` fields (`appUrl`, `treeUrl`,
//! `settingsUrl`) are relative to `baseUrl` and stay as they are.
//!
//! So a service runs in one of two modes, chosen per service by a label:
//!
//! - **Unmodified** (the default): Jupyter runs with `base_url` `/` and the prefix is stripped.
//!   Each HTML page gets `baseUrl`, `frontendUrl` and the `full*Url` fields of its config, and
//!   its root-relative `href`/`src` attributes (favicons, the main bundle), moved under the
//!   prefix: the page then looks exactly as it would if Jupyter had been started with
//!   `base_url` = the prefix, and every request it makes, WebSockets included, carries the
//!   prefix. One API answer holds root URLs too: `api/kernelspecs` names each kernel's logos
//!   (`/kernelspecs/python3/logo-svg.svg`, shown by the launcher), which move likewise. Jupyter's cookies (`_xsrf`, `username-{host}`) come with `Path=/` and are scoped
//!   to the prefix, so two Jupyters in one browser each see their own `_xsrf`, which the
//!   frontend sends back as `X-XSRFToken` on every POST, PUT, PATCH and DELETE.
//! - **Prefix kept** (label `portico.keep_prefix=true`, or `keep_prefix = true` on a file
//!   service, which Portico passes on as that label): Jupyter was started with `--ServerApp.base_url=/proxy/{id}/`, as
//!   platforms often do. It serves only below that path (everything else is a 404), so the
//!   prefix stays on upstream paths and nothing is rewritten: its pages, redirects and cookie
//!   paths are already right.
//!
//! In both modes Jupyter's origin checks pass because Portico keeps the client's `Host`: the
//! WebSocket handshake and every unsafe request compare `Origin` (or `Referer`) with `Host`.
//! Jupyter also refuses a `Host` that is not loopback unless it runs with
//! `--ServerApp.allow_remote_access=True` (the default when it listens on a non-loopback
//! address, as in a container). Its readiness path is `{base_url}api`: `/api` unmodified,
//! `/proxy/{id}/api` with the prefix kept (Portico probes a prefix-kept service below its
//! prefix).

use portico_plugin_sdk::{
    BodyRewrite, Header, OrphanRequest, Plugin, PluginInfo, Request, Response, ResponsePlan,
    Service, UpstreamRequest, UpstreamWebsocket, defaults, export_plugin, rewrite,
};

/// The Jupyter handler.
#[derive(Debug)]
pub struct Jupyter;

/// The largest page rewritten. Jupyter's pages are a few KiB: the config and a script tag.
const MAX_PAGE: u32 = 1024 * 1024;

/// The labels that say Jupyter runs with `base_url` = the prefix: Docker passes only `portico.*`
/// labels, a file service may use the short name.
const KEEP_PREFIX_LABELS: [&str; 2] = ["portico.keep_prefix", "keep_prefix"];

/// Jupyter's un-prefixed paths and how strongly each belongs to it, for requests from a page
/// that predates the rewrite (a tab opened before Portico, a bookmark of `/lab`). Matched by
/// whole segments, so `/lab` does not take `/labels`. Only Jupyter's own API and pages: other
/// frameworks serve `/api/` and `/static/` too.
const CLAIMS: [(&str, u32); 10] = [
    ("/api/kernels", 100),
    ("/api/kernelspecs", 100),
    ("/api/sessions", 100),
    ("/api/contents", 100),
    ("/api/terminals", 100),
    ("/api/events", 100),
    ("/lab", 80),
    ("/static/lab", 80),
    ("/static/notebook", 80),
    ("/lsp", 60),
];

impl Plugin for Jupyter {
    fn info() -> PluginInfo {
        PluginInfo::new("jupyter", env!("CARGO_PKG_VERSION"))
            .service_types(&["jupyter", "jupyterlab", "notebook"])
            .default_port(8888)
            .health_path("/api")
            // The commands that start it, and the Docker stacks' start script.
            .detect(&[
                "jupyterlab",
                "jupyter lab",
                "jupyter-lab",
                "jupyter notebook",
                "jupyter-notebook",
                "jupyter server",
                "jupyter-server",
                "start-notebook",
            ])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
            // The CSP names Jupyter's report URI, from the root.
            .response_headers(&["location", "set-cookie", "content-security-policy"])
            .rewrite_bodies(&["text/html", "application/json"], MAX_PAGE)
    }

    fn on_request(req: Request) -> UpstreamRequest {
        defaults::on_request(&req, keeps_prefix(&req.service))
    }

    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        // The kernel's `v1.kernel.websocket.jupyter.org` is offered as the client sent it, and
        // Portico echoes what Jupyter picks (or none, for the legacy protocol).
        let _ = protocols;
        defaults::on_websocket(&req, keeps_prefix(&req.service))
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        let mut headers = defaults::response_headers(&resp);
        let kept = keeps_prefix(&resp.request.service);
        if !kept {
            let prefix = &resp.request.prefix;
            let policies: Vec<&Header> = resp
                .headers
                .iter()
                .filter(|header| header.name == "content-security-policy")
                .collect();
            let fixed: Vec<Option<String>> = policies
                .iter()
                .map(|policy| csp_report_uri(&policy.value, prefix))
                .collect();
            if fixed.iter().any(Option::is_some) {
                for (policy, fixed) in policies.iter().zip(fixed) {
                    let value = fixed.unwrap_or_else(|| policy.value.clone());
                    headers
                        .set
                        .push(Header::new("content-security-policy", value));
                }
            }
        }
        let rewrite = !kept
            && match defaults::media_type(&resp).as_str() {
                "text/html" => true,
                "application/json" => is_kernelspecs(&resp.request.path),
                _ => false,
            };
        ResponsePlan {
            headers,
            body: if rewrite {
                BodyRewrite::Whole
            } else {
                BodyRewrite::Keep
            },
        }
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        let prefix = &resp.request.prefix;
        if is_kernelspecs(&resp.request.path) {
            kernelspecs(&body, prefix)
        } else {
            page(&body, prefix)
        }
    }
}

/// True when the service's labels say Jupyter runs with `base_url` = the prefix.
pub fn keeps_prefix(service: &Service) -> bool {
    service.labels.iter().any(|(name, value)| {
        KEEP_PREFIX_LABELS.contains(&name.as_str()) && value.trim().eq_ignore_ascii_case("true")
    })
}

/// True for the kernelspecs API, whose answer holds root URLs.
fn is_kernelspecs(path: &str) -> bool {
    rewrite::has_prefix(path, "/api/kernelspecs")
}

/// The kernelspecs API's answer with its `resources` (the kernels' logos, which the launcher
/// shows) under the prefix. Jupyter Server writes them from `base_url`
/// (`"logo-svg": "/kernelspecs/python3/logo-svg.svg"`); the only strings of the answer that
/// start with `/kernelspecs/` are these.
pub fn kernelspecs(json: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let to = format!("\"{}/kernelspecs/", rewrite::json_string_body(prefix));
    rewrite::replace_bytes(json, b"\"/kernelspecs/", to.as_bytes())
}

/// How strongly an un-prefixed path belongs to Jupyter.
pub fn claim_path(path: &str) -> u32 {
    CLAIMS
        .iter()
        .find(|(prefix, _)| rewrite::has_prefix(path, prefix))
        .map_or(0, |(_, score)| *score)
}

/// A Jupyter page (JupyterLab, Notebook 7, the server's login and error pages) as Jupyter would
/// serve it with `base_url` = `prefix`: its config's root URLs and its root-relative
/// attributes moved under the prefix. `None` when nothing changed.
pub fn page(html: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut out = html.to_vec();
    let mut changed = false;
    if let Some((start, end)) = config_span(html)
        && let Ok(config) = std::str::from_utf8(&html[start..end])
        && let Some(fixed) = page_config(config, prefix)
    {
        out = [&html[..start], fixed.as_bytes(), &html[end..]].concat();
        changed = true;
    }
    if let Some(next) = rewrite::prefix_html_urls(&out, prefix) {
        out = next;
        changed = true;
    }
    changed.then_some(out)
}

/// Where the JSON of `<script id="jupyter-config-data">` lies in `html`.
fn config_span(html: &[u8]) -> Option<(usize, usize)> {
    let id = find(html, b"id=\"jupyter-config-data\"", 0)?;
    let start = find(html, b">", id)? + 1;
    let end = find(html, b"</script>", start)?;
    Some((start, end))
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// True for the config fields that hold a URL from the server's root: `baseUrl`, `frontendUrl`
/// and `full*Url` (`fullStaticUrl`, `fullLabextensionsUrl`, ...). `fullMathjaxUrl` matches too
/// but holds a CDN URL, which is not root-relative and so stays.
fn is_root_url_field(name: &str) -> bool {
    name == "baseUrl"
        || name == "frontendUrl"
        || (name.starts_with("full") && name.ends_with("Url"))
}

/// Jupyter's page config (a JSON object) with its root URL fields under `prefix`, or `None`
/// when none needs it. Only the top-level fields' string values change; the rest of the text,
/// formatting included, is copied as it is.
pub fn page_config(json: &str, prefix: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let escaped = rewrite::json_string_body(prefix);
    let mut out = String::with_capacity(json.len() + 32 * escaped.len());
    let mut last = 0;
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let end = string_end(bytes, index)?;
                let name = &json[index + 1..end];
                index = end + 1;
                let Some(colon) = skip_space(bytes, index).filter(|&at| bytes[at] == b':') else {
                    continue;
                };
                index = colon + 1;
                let Some(quote) = skip_space(bytes, index).filter(|&at| bytes[at] == b'"') else {
                    continue;
                };
                let value_end = string_end(bytes, quote)?;
                let value = &json[quote + 1..value_end];
                index = value_end + 1;
                let root_relative = value.starts_with('/') && !value.starts_with("//");
                if depth == 1
                    && is_root_url_field(name)
                    && root_relative
                    && !rewrite::has_prefix(value, prefix)
                {
                    out.push_str(&json[last..=quote]);
                    out.push_str(&escaped);
                    last = quote + 1;
                }
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    if last == 0 {
        return None;
    }
    out.push_str(&json[last..]);
    Some(out)
}

/// The index of the quote that closes the JSON string opened at `open`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut index = open + 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return Some(index),
            _ => index += 1,
        }
    }
    None
}

/// The index of the first byte at or after `from` that is not JSON whitespace.
fn skip_space(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| !matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r'))
}

/// A `Content-Security-Policy` whose root-relative `report-uri` (Jupyter's
/// `/api/security/csp-report`) is moved under the prefix, or `None` when it needs no change.
pub fn csp_report_uri(policy: &str, prefix: &str) -> Option<String> {
    let mut changed = false;
    let directives: Vec<String> = policy
        .split(';')
        .map(|directive| {
            let trimmed = directive.trim_start();
            let is_report = trimmed
                .split_ascii_whitespace()
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("report-uri"));
            if !is_report {
                return directive.to_owned();
            }
            let lead = &directive[..directive.len() - trimmed.len()];
            let tokens: Vec<String> = trimmed
                .split_ascii_whitespace()
                .enumerate()
                .map(|(index, token)| {
                    let root_relative = token.starts_with('/') && !token.starts_with("//");
                    if index > 0 && root_relative && !rewrite::has_prefix(token, prefix) {
                        changed = true;
                        format!("{prefix}{token}")
                    } else {
                        token.to_owned()
                    }
                })
                .collect();
            format!("{lead}{}", tokens.join(" "))
        })
        .collect();
    changed.then(|| directives.join(";"))
}

export_plugin!(Jupyter);

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proxy/nb";

    /// The head of JupyterLab 4.6's `/lab` page with `base_url` `/`, shortened.
    const LAB: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>JupyterLab</title>   <script id="jupyter-config-data" type="application/json">{"appName": "JupyterLab", "appUrl": "/lab", "appSettingsDir": "/usr/share/jupyter/lab/settings", "baseUrl": "/", "extensionManager": {"can_install": true, "install_path": "/venv", "name": "PyPI"}, "federated_extensions": [{"load": "static/remoteEntry.5cbb.js", "name": "jupyterlab_pygments"}], "fullAppUrl": "/lab", "fullLabextensionsUrl": "/lab/extensions", "fullMathjaxUrl": "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js", "fullStaticUrl": "/static/lab", "fullTreeUrl": "/lab/tree", "preferredPath": "/", "serverRoot": "/srv/notebooks", "settingsUrl": "/lab/api/settings", "treeUrl": "/lab/tree", "wsUrl": ""}</script><link rel="icon" type="image/x-icon" href="/static/favicons/favicon.ico" class="idle favicon"> <script defer="defer" src="/static/lab/main.efd3.js?v=efd3"></script></head>"#;

    fn rewritten(html: &str) -> String {
        String::from_utf8(page(html.as_bytes(), P).expect("changed")).expect("utf-8")
    }

    #[test]
    fn lab_page_looks_served_with_base_url() {
        let out = rewritten(LAB);
        for expected in [
            r#""baseUrl": "/proxy/nb/""#,
            r#""fullAppUrl": "/proxy/nb/lab""#,
            r#""fullLabextensionsUrl": "/proxy/nb/lab/extensions""#,
            r#""fullStaticUrl": "/proxy/nb/static/lab""#,
            r#""fullTreeUrl": "/proxy/nb/lab/tree""#,
            r#"href="/proxy/nb/static/favicons/favicon.ico""#,
            r#"src="/proxy/nb/static/lab/main.efd3.js?v=efd3""#,
        ] {
            assert!(out.contains(expected), "{expected} missing from {out}");
        }
    }

    #[test]
    fn relative_fields_paths_and_cdn_stay() {
        let out = rewritten(LAB);
        for kept in [
            r#""appUrl": "/lab""#,
            r#""settingsUrl": "/lab/api/settings""#,
            r#""treeUrl": "/lab/tree""#,
            r#""preferredPath": "/""#,
            r#""serverRoot": "/srv/notebooks""#,
            r#""install_path": "/venv""#,
            r#""load": "static/remoteEntry.5cbb.js""#,
            r#""fullMathjaxUrl": "https://cdnjs.cloudflare.com/"#,
            r#""wsUrl": """#,
        ] {
            assert!(out.contains(kept), "{kept} changed in {out}");
        }
        assert!(!out.contains("/proxy/nb/proxy/nb"), "prefixed twice: {out}");
    }

    #[test]
    fn notebook_frontend_url_is_moved() {
        let config = r#"{"appName": "Jupyter Notebook", "frontendUrl": "/", "fullStaticUrl": "/static/notebook", "baseUrl": "/"}"#;
        assert_eq!(
            page_config(config, P).as_deref(),
            Some(
                r#"{"appName": "Jupyter Notebook", "frontendUrl": "/proxy/nb/", "fullStaticUrl": "/proxy/nb/static/notebook", "baseUrl": "/proxy/nb/"}"#
            )
        );
    }

    #[test]
    fn page_served_with_base_url_is_left_alone() {
        let config = r#"{"baseUrl": "/proxy/nb/", "fullStaticUrl": "/proxy/nb/static/lab"}"#;
        assert_eq!(page_config(config, P), None);
        let html = format!(
            r#"<script id="jupyter-config-data" type="application/json">{config}</script><script src="/proxy/nb/static/lab/main.js"></script>"#
        );
        assert_eq!(page(html.as_bytes(), P), None);
    }

    #[test]
    fn nested_fields_and_escapes_are_respected() {
        let config = r#"{"news": {"baseUrl": "/x"}, "label": "say \"baseUrl\": \"/\"", "fullStaticUrl":"/static/lab"}"#;
        assert_eq!(
            page_config(config, P).as_deref(),
            Some(
                r#"{"news": {"baseUrl": "/x"}, "label": "say \"baseUrl\": \"/\"", "fullStaticUrl":"/proxy/nb/static/lab"}"#
            )
        );
        assert_eq!(page_config(r#"{"baseUrl": "/"#, P), None, "unterminated");
    }

    #[test]
    fn prefix_is_escaped_for_json() {
        assert_eq!(
            page_config(r#"{"baseUrl": "/"}"#, "/proxy/a\"b</").as_deref(),
            Some(r#"{"baseUrl": "/proxy/a\"b\u003c//"}"#)
        );
    }

    #[test]
    fn pages_without_config_get_their_links_moved() {
        let html = r#"<link href="/static/style/index.css?v=1"><a href="/lab">JupyterLab</a>"#;
        assert_eq!(
            rewritten(html),
            r#"<link href="/proxy/nb/static/style/index.css?v=1"><a href="/proxy/nb/lab">JupyterLab</a>"#
        );
        assert_eq!(page(b"{}", P), None);
    }

    #[test]
    fn kernel_logos_move_under_prefix() {
        let json = br#"{"default": "python3", "kernelspecs": {"python3": {"name": "python3", "spec": {"argv": ["/venv/bin/python", "-m", "ipykernel_launcher"]}, "resources": {"logo-svg": "/kernelspecs/python3/logo-svg.svg", "logo-64x64": "/kernelspecs/python3/logo-64x64.png"}}}}"#;
        let out = String::from_utf8(kernelspecs(json, P).expect("changed")).expect("utf-8");
        assert!(
            out.contains(r#""logo-svg": "/proxy/nb/kernelspecs/python3/logo-svg.svg""#),
            "{out}"
        );
        assert!(
            out.contains(r#""logo-64x64": "/proxy/nb/kernelspecs/python3/logo-64x64.png""#),
            "{out}"
        );
        assert!(out.contains(r#""/venv/bin/python""#), "{out}");
        assert_eq!(kernelspecs(&out.into_bytes(), P), None, "prefixed once");
        assert!(is_kernelspecs("/api/kernelspecs"));
        assert!(is_kernelspecs("/api/kernelspecs/python3"));
        assert!(!is_kernelspecs("/api/kernels"));
    }

    #[test]
    fn csp_report_uri_moves_under_prefix() {
        assert_eq!(
            csp_report_uri(
                "frame-ancestors 'self'; report-uri /api/security/csp-report; default-src 'none'",
                P
            )
            .as_deref(),
            Some(
                "frame-ancestors 'self'; report-uri /proxy/nb/api/security/csp-report; default-src 'none'"
            )
        );
        assert_eq!(
            csp_report_uri("report-uri /proxy/nb/api/security/csp-report", P),
            None
        );
        assert_eq!(csp_report_uri("default-src 'self' /static", P), None);
        assert_eq!(csp_report_uri("report-uri https://csp.example/r", P), None);
    }

    fn service(labels: &[(&str, &str)]) -> Service {
        Service {
            id: "nb".to_owned(),
            service_type: "jupyter".to_owned(),
            labels: labels
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            upstream: "http://127.0.0.1:8888".to_owned(),
        }
    }

    #[test]
    fn keep_prefix_is_chosen_by_label() {
        assert!(!keeps_prefix(&service(&[])));
        assert!(keeps_prefix(&service(&[("portico.keep_prefix", "true")])));
        assert!(keeps_prefix(&service(&[("keep_prefix", " TRUE ")])));
        assert!(!keeps_prefix(&service(&[("portico.keep_prefix", "false")])));
        assert!(!keeps_prefix(&service(&[("portico.keep_prefix", "yes")])));
        assert!(!keeps_prefix(&service(&[("other", "true")])));
    }

    #[test]
    fn claims_jupyter_paths_by_segment() {
        assert_eq!(claim_path("/api/kernels/1234/channels"), 100);
        assert_eq!(claim_path("/api/contents"), 100);
        assert_eq!(claim_path("/lab"), 80);
        assert_eq!(claim_path("/lab/tree/x.ipynb"), 80);
        assert_eq!(claim_path("/static/lab/main.js"), 80);
        assert_eq!(claim_path("/labels"), 0);
        assert_eq!(claim_path("/api/users"), 0);
        assert_eq!(claim_path("/static/app.js"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Jupyter::info().claim_prefixes;
        assert_eq!(declared.len(), CLAIMS.len());
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }

    #[test]
    fn info_reads_cookies_locations_and_policies() {
        let info = Jupyter::info();
        assert_eq!(
            info.response_headers,
            ["location", "set-cookie", "content-security-policy"]
        );
        assert_eq!(info.health_path.as_deref(), Some("/api"));
        assert!(
            !info.keep_prefix,
            "the prefix is kept per service, by label"
        );
    }
}
