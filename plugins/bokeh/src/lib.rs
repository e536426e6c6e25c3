//! The Bokeh plugin, for Bokeh server apps and Panel apps (which run on a Bokeh server).
//!
//! Facts (Bokeh 3.9, Panel 1.9, started as `bokeh serve app.py` / `panel serve app.py` with no
//! `--prefix`):
//!
//! - Default port 5006. `/` redirects to the single app (`Location: /app` from Bokeh,
//!   `./app` from Panel); the page is served at `/{app}`.
//! - Readiness: no health endpoint without app options (Panel's `/liveness` needs
//!   `--liveness`), and `/` answers a redirect, so none is declared.
//! - The page loads BokehJS from absolute `/static/js/bokeh*.min.js` URLs (server resources
//!   with `root_url="/"`); Panel's own template uses relative `static/...` URLs. The plugin
//!   moves root-relative `src`/`href` values of the page under the prefix, and claims
//!   un-prefixed `/static/js/bokeh` and `/static/extensions/panel/` requests that still arrive.
//! - BokehJS opens its WebSocket at `{page path}/ws`, from `window.location`, so it stays under
//!   the prefix. The subprotocol list is `["bokeh", <session token>]`, the token several KB
//!   (it carries the page request's headers); it is passed through unchanged.
//! - Bokeh refuses (403) a WebSocket whose `Origin` host is not on its allow-list, which without
//!   `--allow-websocket-origin` is `localhost:{listening port}` alone. The plugin sends that
//!   origin upstream for a handshake whose `Origin` is Portico's public host, so the page works
//!   with the app unconfigured; a handshake from any other origin keeps its `Origin` and is
//!   refused by Bokeh as before. The port is the upstream's, which is the one Bokeh listens on
//!   when Portico reaches the app directly (a container's own address and port); behind a port
//!   mapping, or with `--allow-websocket-origin` given, the app's list must include
//!   `localhost:{upstream port}`.

use portico_plugin_sdk::{
    ChunkRewrite, Header, OrphanRequest, Plugin, PluginInfo, Request, Response, ResponsePlan,
    UpstreamWebsocket, claim_by_prefix, defaults, export_plugin, header,
};

/// The Bokeh and Panel handler.
#[derive(Debug)]
pub struct Bokeh;

/// The largest page rewritten. A server app's page is small (the document arrives over the
/// WebSocket); this leaves room for templates that inline data.
const MAX_PAGE: u32 = 8 * 1024 * 1024;

/// Bokeh's un-prefixed paths and how strongly each belongs to it. Both are precise enough to
/// win over a framework that merely serves `/static/`.
const CLAIMS: [(&str, u32); 2] = [
    ("/static/js/bokeh", 100),
    ("/static/extensions/panel/", 100),
];

impl Plugin for Bokeh {
    fn info() -> PluginInfo {
        PluginInfo::new("bokeh", env!("CARGO_PKG_VERSION"))
            .service_types(&["bokeh", "panel"])
            .default_port(5006)
            .detect(&["bokeh serve", "panel serve"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
            .request_headers(&["origin"])
            .rewrite_bodies(&["text/html"], MAX_PAGE)
    }

    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        let _ = protocols;
        let mut upstream = defaults::on_websocket(&req, Self::KEEP_PREFIX);
        let origin = header(&req.headers, "origin");
        if let Some(origin) = upstream_origin(origin, &req.public_host, &req.service.upstream) {
            upstream.headers.set.push(Header::new("origin", origin));
        }
        upstream
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        defaults::on_html_response(&resp)
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        defaults::prefix_html(&resp, &body)
    }

    fn rewrite_chunk(resp: Response, chunk: Vec<u8>, _: Vec<u8>, last: bool) -> ChunkRewrite {
        defaults::prefix_html_chunk(&resp, chunk, last)
    }
}

/// How strongly an un-prefixed path belongs to Bokeh.
pub fn claim_path(path: &str) -> u32 {
    claim_by_prefix(&CLAIMS, path)
}

/// The `Origin` to send upstream on a WebSocket handshake, or `None` to keep the client's.
///
/// A handshake from a page on Portico's public host gets `http://localhost:{port}`, the origin
/// an unconfigured Bokeh server allows, `port` being the upstream's. Any other origin is kept,
/// so that Bokeh still refuses pages of other sites.
pub fn upstream_origin(client: Option<&str>, public_host: &str, upstream: &str) -> Option<String> {
    let client = client?;
    let (_, rest) = client.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if public_host.is_empty() || !authority.eq_ignore_ascii_case(public_host) {
        return None;
    }
    Some(format!("http://localhost:{}", upstream_port(upstream)?))
}

/// The port of an upstream base URL (`http://10.0.0.5:5006/base`), or the scheme's default.
fn upstream_port(upstream: &str) -> Option<u16> {
    let (scheme, rest) = upstream.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // After an IPv6 literal's `]`, or after the last `:` of a name or IPv4 address.
    let host_end = authority.rfind(']').map_or(0, |end| end + 1);
    match authority[host_end..].rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None if scheme.eq_ignore_ascii_case("https") => Some(443),
        None => Some(80),
    }
}

export_plugin!(Bokeh);

#[cfg(test)]
mod tests {
    use super::*;
    use portico_plugin_sdk::{BodyRewrite, Service, Subprotocols};

    const P: &str = "/proxy/bk";

    #[test]
    fn page_scripts_move_under_the_prefix() {
        let page = br#"<script src="/static/js/bokeh.min.js?v=6acf"></script>
<script type="text/javascript" src="static/extensions/panel/panel.min.js?v=32f9"></script>
<link rel="icon" href="./favicon.ico">"#;
        let resp = portico_plugin_sdk::testing::response(
            portico_plugin_sdk::testing::request("bokeh", "/app"),
            200,
        )
        .with_header("content-type", "text/html; charset=utf-8");
        assert_eq!(Bokeh::on_response(resp.clone()).body, BodyRewrite::Whole);
        let out = Bokeh::rewrite_body(resp, page.to_vec()).expect("changed");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(
            out.contains(r#"src="/proxy/app/static/js/bokeh.min.js?v=6acf""#),
            "{out}"
        );
        // Panel's relative URLs resolve under the page's path already.
        assert!(
            out.contains(r#"src="static/extensions/panel/panel.min.js?v=32f9""#),
            "{out}"
        );
        assert!(out.contains(r#"href="./favicon.ico""#), "{out}");
    }

    #[test]
    fn same_host_origin_becomes_the_upstream_default() {
        assert_eq!(
            upstream_origin(
                Some("http://portal.example:8080"),
                "portal.example:8080",
                "http://127.0.0.1:5006"
            )
            .as_deref(),
            Some("http://localhost:5006")
        );
        assert_eq!(
            upstream_origin(
                Some("https://Portal.Example"),
                "portal.example",
                "http://10.0.0.5:40123/"
            )
            .as_deref(),
            Some("http://localhost:40123")
        );
        assert_eq!(
            upstream_origin(Some("http://p.example"), "p.example", "http://[::1]:5006").as_deref(),
            Some("http://localhost:5006")
        );
        assert_eq!(
            upstream_origin(Some("http://p.example"), "p.example", "http://bokeh").as_deref(),
            Some("http://localhost:80")
        );
    }

    #[test]
    fn foreign_or_missing_origin_is_kept() {
        let upstream = "http://127.0.0.1:5006";
        assert_eq!(
            upstream_origin(Some("http://evil.example"), "portal.example", upstream),
            None
        );
        assert_eq!(
            upstream_origin(
                Some("http://portal.example.evil"),
                "portal.example",
                upstream
            ),
            None
        );
        assert_eq!(
            upstream_origin(Some("null"), "portal.example", upstream),
            None
        );
        assert_eq!(upstream_origin(None, "portal.example", upstream), None);
        assert_eq!(upstream_origin(Some("http://x"), "", upstream), None);
    }

    fn handshake(origin: Option<&str>) -> Request {
        Request {
            method: "GET".to_owned(),
            path: "/app/ws".to_owned(),
            query: None,
            prefix: P.to_owned(),
            public_host: "portal.example:8080".to_owned(),
            scheme: "http".to_owned(),
            headers: origin
                .map(|origin| vec![Header::new("origin", origin)])
                .unwrap_or_default(),
            service: Service {
                id: "bk".to_owned(),
                service_type: "bokeh".to_owned(),
                labels: Vec::new(),
                upstream: "http://127.0.0.1:5006".to_owned(),
            },
        }
    }

    #[test]
    fn websocket_keeps_path_and_token_and_fixes_origin() {
        let protocols = vec!["bokeh".to_owned(), "eyJ0b2tlbi".repeat(400)];
        let upstream =
            Bokeh::on_websocket(handshake(Some("http://portal.example:8080")), protocols);
        assert_eq!(upstream.path, "/app/ws");
        assert!(matches!(upstream.protocols, Subprotocols::PassThrough));
        let origin = header(&upstream.headers.set, "origin");
        assert_eq!(origin, Some("http://localhost:5006"));
        assert_eq!(header(&upstream.headers.set, "x-forwarded-prefix"), Some(P));

        let foreign = Bokeh::on_websocket(handshake(Some("http://evil.example")), Vec::new());
        assert_eq!(header(&foreign.headers.set, "origin"), None);
    }

    #[test]
    fn claims_bokeh_and_panel_static_paths() {
        assert_eq!(claim_path("/static/js/bokeh.min.js"), 100);
        assert_eq!(claim_path("/static/js/bokeh-widgets.min.js"), 100);
        assert_eq!(claim_path("/static/extensions/panel/panel.min.js"), 100);
        assert_eq!(claim_path("/static/js/main.js"), 0);
        assert_eq!(claim_path("/_stcore/health"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Bokeh::info().claim_prefixes;
        assert_eq!(declared, ["/static/js/bokeh", "/static/extensions/panel/"]);
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
