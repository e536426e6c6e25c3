//! The Streamlit plugin.
//!
//! Streamlit works behind a stripped prefix when the page URL ends in a slash: its assets are
//! relative and its frontend finds `_stcore/stream` from the page path. What it needs from the
//! proxy is the WebSocket subprotocol list untouched (it carries the XSRF token and session id),
//! and un-prefixed `/_stcore/...` and `/static/...` requests routed back to it.

use portico_plugin_sdk::{OrphanRequest, Plugin, PluginInfo, claim_by_prefix, export_plugin};

/// The Streamlit handler.
#[derive(Debug)]
pub struct Streamlit;

/// Streamlit's un-prefixed paths and how strongly each belongs to it: its own `_stcore` API
/// above the static bundle, media and the page's icons, which other frameworks serve too. The
/// prefixes are declared in `info`, so Portico offers Streamlit no other path.
const CLAIMS: [(&str, u32); 5] = [
    ("/_stcore/", 100),
    ("/static/", 40),
    ("/media/", 40),
    ("/favicon.png", 20),
    ("/manifest.json", 20),
];

impl Plugin for Streamlit {
    fn info() -> PluginInfo {
        PluginInfo::new("streamlit", env!("CARGO_PKG_VERSION"))
            .service_types(&["streamlit"])
            .default_port(8501)
            .health_path("/_stcore/health")
            .detect(&["streamlit"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }
}

/// How strongly an un-prefixed path belongs to Streamlit.
pub fn claim_path(path: &str) -> u32 {
    claim_by_prefix(&CLAIMS, path)
}

export_plugin!(Streamlit);

#[cfg(test)]
mod tests {
    use super::{Streamlit, claim_path};
    use portico_plugin_sdk::Plugin as _;

    #[test]
    fn claims_its_own_paths() {
        assert_eq!(claim_path("/_stcore/host-config"), 100);
        assert_eq!(claim_path("/static/js/main.js"), 40);
        assert_eq!(claim_path("/favicon.png"), 20);
        assert_eq!(claim_path("/_dash-layout"), 0);
        assert_eq!(claim_path("/"), 0);
    }

    #[test]
    fn declares_every_prefix_it_claims() {
        let declared = Streamlit::info().claim_prefixes;
        assert_eq!(
            declared,
            [
                "/_stcore/",
                "/static/",
                "/media/",
                "/favicon.png",
                "/manifest.json"
            ]
        );
        for prefix in &declared {
            assert!(claim_path(prefix) > 0, "{prefix} declared but not claimed");
        }
    }
}
