//! The Streamlit plugin.
//!
//! Streamlit works behind a stripped prefix when the page URL ends in a slash: its assets are
//! relative and its frontend finds `_stcore/stream` from the page path. What it needs from the
//! proxy is the WebSocket subprotocol list untouched (it carries the XSRF token and session id),
//! and un-prefixed `/_stcore/...` and `/static/...` requests routed back to it.

use portico_plugin_sdk::{OrphanRequest, Plugin, PluginInfo, export_plugin};

/// The Streamlit handler.
#[derive(Debug)]
pub struct Streamlit;

impl Plugin for Streamlit {
    fn info() -> PluginInfo {
        PluginInfo::new("streamlit", env!("CARGO_PKG_VERSION"))
            .service_types(&["streamlit"])
            .default_port(8501)
            .health_path("/_stcore/health")
            .detect(&["streamlit"])
    }

    fn claim(req: OrphanRequest) -> u32 {
        claim_path(&req.path)
    }
}

/// How strongly an un-prefixed path belongs to Streamlit.
pub fn claim_path(path: &str) -> u32 {
    if path.starts_with("/_stcore/") {
        100
    } else if path.starts_with("/static/") || path.starts_with("/media/") {
        40
    } else if path == "/favicon.png" || path == "/manifest.json" {
        20
    } else {
        0
    }
}

export_plugin!(Streamlit);

#[cfg(test)]
mod tests {
    use super::claim_path;

    #[test]
    fn claims_its_own_paths() {
        assert_eq!(claim_path("/_stcore/host-config"), 100);
        assert_eq!(claim_path("/static/js/main.js"), 40);
        assert_eq!(claim_path("/_dash-layout"), 0);
        assert_eq!(claim_path("/"), 0);
    }
}
