//! The generic plugin: Portico's default behaviour for any HTTP app, and the worked example in
//! `plugins/README.md`.
//!
//! The prefix is stripped, `x-forwarded-prefix` announces it, a root-relative `Location` is kept
//! under it and cookie paths are scoped to it. All of that is the SDK's default hooks, so the
//! plugin only describes itself. It declares no claim prefixes: an app of unknown type gets
//! un-prefixed requests only by `Referer` or affinity cookie, never by claim.

use portico_plugin_sdk::{Plugin, PluginInfo, export_plugin};

/// The generic handler.
#[derive(Debug)]
pub struct Generic;

impl Plugin for Generic {
    fn info() -> PluginInfo {
        PluginInfo::new("generic", env!("CARGO_PKG_VERSION")).service_types(&["generic"])
    }
}

export_plugin!(Generic);
