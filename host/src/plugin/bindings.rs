//! Host bindings of `wit/plugin.wit`. This is the only place `bindgen!` runs; the generated
//! names stay in a private module and only the contract's types are re-exported.

mod generated {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        exports: { default: async },
    });
}

pub use generated::portico::plugin::types::{
    Header, HeaderEdits, OrphanRequest, PluginInfo, Request, Response, ResponsePlan, Service,
    Subprotocols, UpstreamRequest, UpstreamWebsocket,
};

/// An instantiated plugin world.
pub(crate) use generated::Plugin as World;
/// A plugin component linked and ready to instantiate.
pub(crate) use generated::PluginPre as WorldPre;

impl HeaderEdits {
    /// No changes.
    pub fn none() -> Self {
        Self {
            set: Vec::new(),
            remove: Vec::new(),
        }
    }
}

impl Header {
    /// A header; `name` should be lower case.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}
