//! The Gradio plugin.
//!
//! Facts (Gradio 6.31, launched with no `root_path` and no `GRADIO_ROOT_PATH`):
//!
//! - Default port 7860. Readiness: `GET /gradio_api/startup-events` answers 200 (and runs the
//!   app's startup events the first time, as the page would).
//! - The page embeds its config with a `root`, the absolute URL every API call, the SSE stream
//!   (`/gradio_api/queue/join`, `/gradio_api/queue/data`), the heartbeat
//!   (`/gradio_api/heartbeat/{session}`), file URLs, `theme.css` and the "Use via API" panel are
//!   built from. Gradio computes it in `route_utils.get_root_url`: from `root_path` when set,
//!   otherwise as `http://{x-forwarded-host}` (made `https` by `x-forwarded-proto: https`)
//!   when that header is present, otherwise from the request URL. It never reads
//!   `x-forwarded-prefix`, so with Portico's plain `x-forwarded-host` the root is the public
//!   host without the prefix and every request leaves it.
//! - The plugin therefore sends `x-forwarded-host: {public host}{prefix}` upstream: Gradio
//!   parses the header as the authority and path of a URL, so the root becomes
//!   `http(s)://{public host}{prefix}` and everything the page asks for stays under the
//!   prefix. The only other reader of the header, the MCP landing page, appends its own path
//!   to it and so names the prefixed URL too.
//! - The index page's own assets are relative (`<base href="./">`, `./assets/...`), but its
//!   manifest link is `/manifest.json`: the plugin moves root-relative `src`/`href` values of
//!   the page under the prefix.
//! - Streaming is Server-Sent Events (`text/event-stream`), which Portico never buffers; there
//!   is no WebSocket.

use portico_plugin_sdk::{
    ChunkRewrite, Header, HeaderEdits, OrphanRequest, Plugin, PluginInfo, Request, Response,
    ResponsePlan, UpstreamRequest, UpstreamWebsocket, claim_by_prefix, defaults, export_plugin,
};

/// The Gradio handler.
#[derive(Debug)]
pub struct Gradio;

/// The largest page rewritten. The index page embeds the whole app config, which grows with
/// the number of components and examples.
const MAX_PAGE: u32 = 16 * 1024 * 1024;

/// Gradio's un-prefixed paths and how strongly each belongs to it: its API above the theme and
/// the generic names (`/static/`, `/assets/`) that other frameworks serve too.
const CLAIMS: [(&str, u32); 5] = [
    ("/gradio_api/", 100),
    ("/theme.css", 60),
    ("/static/", 20),
    ("/assets/", 20),
    ("/manifest.json", 10),
];

impl Plugin for Gradio {
    fn info() -> PluginInfo {
        PluginInfo::new("gradio", env!("CARGO_PKG_VERSION"))
            .service_types(&["gradio"])
            .default_port(7860)
            .health_path("/gradio_api/startup-events")
            .detect(&["gradio"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
            .rewrite_bodies(&["text/html"], MAX_PAGE)
    }

    fn on_request(req: Request) -> UpstreamRequest {
        let mut upstream = defaults::on_request(&req, Self::KEEP_PREFIX);
        public_root(&req, &mut upstream.headers);
        upstream
    }

    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        let _ = protocols;
        let mut upstream = defaults::on_websocket(&req, Self::KEEP_PREFIX);
        public_root(&req, &mut upstream.headers);
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

/// Adds `x-forwarded-host: {public host}{prefix}`, from which Gradio builds its root URL.
fn public_root(req: &Request, edits: &mut HeaderEdits) {
    if let Some(host) = forwarded_host(&req.public_host, &req.prefix) {
        edits.set.push(Header::new("x-forwarded-host", host));
    }
}

/// The `x-forwarded-host` that makes Gradio's root the public URL of the prefix, or `None`
/// when the public host is unknown (Gradio then falls back to the request URL).
pub fn forwarded_host(public_host: &str, prefix: &str) -> Option<String> {
    (!public_host.is_empty()).then(|| format!("{public_host}{}", prefix.trim_end_matches('/')))
}

/// How strongly an un-prefixed path belongs to Gradio.
pub fn claim_path(path: &str) -> u32 {
    claim_by_prefix(&CLAIMS, path)
}

export_plugin!(Gradio);

#[cfg(test)]
mod tests {
    use super::*;
    use portico_plugin_sdk::{BodyRewrite, Service, header};

    #[test]
    fn forwarded_host_carries_the_prefix() {
        assert_eq!(
            forwarded_host("portal.example:8080", "/proxy/g").as_deref(),
            Some("portal.example:8080/proxy/g")
        );
        assert_eq!(
            forwarded_host("portal.example", "/proxy/g/").as_deref(),
            Some("portal.example/proxy/g")
        );
        assert_eq!(forwarded_host("", "/proxy/g"), None);
    }

    fn request(path: &str) -> Request {
        Request {
            method: "POST".to_owned(),
            path: path.to_owned(),
            query: None,
            prefix: "/proxy/g".to_owned(),
            public_host: "portal.example:8080".to_owned(),
            scheme: "https".to_owned(),
            headers: Vec::new(),
            service: Service {
                id: "g".to_owned(),
                service_type: "gradio".to_owned(),
                labels: Vec::new(),
                upstream: "http://127.0.0.1:7860".to_owned(),
            },
        }
    }

    #[test]
    fn requests_carry_the_public_root() {
        let upstream = Gradio::on_request(request("/gradio_api/queue/join"));
        assert_eq!(upstream.path, "/gradio_api/queue/join");
        let set = &upstream.headers.set;
        assert_eq!(
            header(set, "x-forwarded-host"),
            Some("portal.example:8080/proxy/g")
        );
        assert_eq!(header(set, "x-forwarded-prefix"), Some("/proxy/g"));
        let socket = Gradio::on_websocket(request("/ws"), Vec::new());
        assert_eq!(
            header(&socket.headers.set, "x-forwarded-host"),
            Some("portal.example:8080/proxy/g")
        );
    }

    #[test]
    fn manifest_link_moves_under_the_prefix() {
        let page = br#"<base href="./" /><link rel="manifest" href="/manifest.json" />
<script type="module" crossorigin src="./assets/index-DphvyggB.js"></script>"#;
        let resp = portico_plugin_sdk::testing::response(
            portico_plugin_sdk::testing::request("gradio", "/"),
            200,
        )
        .with_header("content-type", "text/html");
        assert_eq!(Gradio::on_response(resp.clone()).body, BodyRewrite::Whole);
        let out = Gradio::rewrite_body(resp, page.to_vec()).expect("changed");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(out.contains(r#"href="/proxy/app/manifest.json""#), "{out}");
        assert!(out.contains(r#"src="./assets/index-DphvyggB.js""#), "{out}");
        assert!(out.contains(r#"<base href="./""#), "{out}");
    }

    #[test]
    fn claims_gradio_paths() {
        assert_eq!(claim_path("/gradio_api/queue/data"), 100);
        assert_eq!(claim_path("/gradio_api/heartbeat/abc"), 100);
        assert_eq!(claim_path("/theme.css"), 60);
        assert_eq!(claim_path("/static/img/logo.svg"), 20);
        assert_eq!(claim_path("/assets/index.js"), 20);
        assert_eq!(claim_path("/_stcore/health"), 0);
        assert_eq!(claim_path("/"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Gradio::info().claim_prefixes;
        assert_eq!(
            declared,
            [
                "/gradio_api/",
                "/theme.css",
                "/static/",
                "/assets/",
                "/manifest.json"
            ]
        );
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
