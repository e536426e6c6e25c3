//! The Solara plugin.
//!
//! Solara 1.x builds every URL of its page (assets, its CDN proxy `/_solara/cdn/`, the client
//! router's base, the kernel WebSocket `/jupyter/api/kernels/{id}/channels`) from a root path it
//! takes from the `x-script-name` header (or `script-name`); it ignores `x-forwarded-prefix`.
//! Without the header its router shows "Page not found: /proxy/{id}/" and every request the page
//! makes leaves the prefix, the kernel WebSocket included. It also keeps the root path of the
//! first page it serves for the life of the process, so the header goes on every request and
//! handshake, and readiness is probed on `/readyz`, which does not fix the root path.
//!
//! Facts for a proxy, read from Solara 1.58's `solara/server/starlette.py`:
//! - default port 8765; health `GET /readyz` (JSON `{"status":"ok"}`);
//! - the session cookie `solara-session-id` is set with `Path=/` (scoped to the prefix by the
//!   SDK's default), and the kernel WebSocket is refused a session without it;
//! - `solara run` fetches its frontend bundles from a CDN unless the `solara-assets` package
//!   of the same release is installed, and sends telemetry unless
//!   `SOLARA_TELEMETRY_MIXPANEL_ENABLE=false`.

use portico_plugin_sdk::{
    Header, OrphanRequest, Plugin, PluginInfo, Request, UpstreamRequest, UpstreamWebsocket,
    claim_by_prefix, defaults, export_plugin,
};

/// The Solara handler.
#[derive(Debug)]
pub struct Solara;

/// The header Solara reads its root path from.
const SCRIPT_NAME: &str = "x-script-name";

/// Solara's un-prefixed paths and how strongly each belongs to it: its own `_solara` endpoints
/// (the CDN proxy, kernel close) above the kernel API it serves under `/jupyter/`, which a
/// Jupyter server would serve under its own base URL. Only a page served before the root path
/// was known makes such requests.
const CLAIMS: [(&str, u32); 2] = [("/_solara/", 100), ("/jupyter/api/kernels/", 50)];

impl Plugin for Solara {
    fn info() -> PluginInfo {
        PluginInfo::new("solara", env!("CARGO_PKG_VERSION"))
            .service_types(&["solara"])
            .default_port(8765)
            .health_path("/readyz")
            .detect(&["solara"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
    }

    fn on_request(req: Request) -> UpstreamRequest {
        let mut upstream = defaults::on_request(&req, Self::KEEP_PREFIX);
        upstream.headers.set.push(script_name(&req));
        upstream
    }

    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        let _ = protocols;
        let mut upstream = defaults::on_websocket(&req, Self::KEEP_PREFIX);
        upstream.headers.set.push(script_name(&req));
        upstream
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }
}

/// `x-script-name: {prefix}`: the root path Solara puts in front of every URL it writes.
pub fn script_name(req: &Request) -> Header {
    Header::new(SCRIPT_NAME, req.prefix.clone())
}

/// How strongly an un-prefixed path belongs to Solara.
pub fn claim_path(path: &str) -> u32 {
    claim_by_prefix(&CLAIMS, path)
}

export_plugin!(Solara);

#[cfg(test)]
mod tests {
    use super::*;
    use portico_plugin_sdk::{Service, Subprotocols, header};

    fn request(path: &str) -> Request {
        Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
            query: Some("v=1".to_owned()),
            prefix: "/proxy/sol".to_owned(),
            public_host: "portal.example".to_owned(),
            scheme: "http".to_owned(),
            headers: Vec::new(),
            service: Service {
                id: "sol".to_owned(),
                service_type: "solara".to_owned(),
                labels: Vec::new(),
                upstream: "http://127.0.0.1:8765".to_owned(),
            },
        }
    }

    #[test]
    fn every_request_names_the_root_path() {
        let upstream = Solara::on_request(request("/static/main-vuetify.js"));
        assert_eq!(upstream.path, "/static/main-vuetify.js");
        assert_eq!(upstream.query.as_deref(), Some("v=1"));
        assert_eq!(
            header(&upstream.headers.set, SCRIPT_NAME),
            Some("/proxy/sol")
        );
        // The generic header stays for anything else in front of the app.
        assert_eq!(
            header(&upstream.headers.set, "x-forwarded-prefix"),
            Some("/proxy/sol")
        );
    }

    #[test]
    fn the_kernel_websocket_names_the_root_path() {
        let protocols = vec!["v1.kernel.websocket.jupyter.org".to_owned()];
        let upstream = Solara::on_websocket(request("/jupyter/api/kernels/k1/channels"), protocols);
        assert_eq!(upstream.path, "/jupyter/api/kernels/k1/channels");
        assert!(matches!(upstream.protocols, Subprotocols::PassThrough));
        assert_eq!(
            header(&upstream.headers.set, SCRIPT_NAME),
            Some("/proxy/sol")
        );
    }

    #[test]
    fn claims_its_own_paths() {
        assert_eq!(claim_path("/_solara/cdn/requirejs@2.3.6/require.js"), 100);
        assert_eq!(claim_path("/jupyter/api/kernels/k1/channels"), 50);
        assert_eq!(claim_path("/static/assets/style.css"), 0);
        assert_eq!(claim_path("/_stcore/health"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Solara::info().claim_prefixes;
        assert_eq!(declared, ["/_solara/", "/jupyter/api/kernels/"]);
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
