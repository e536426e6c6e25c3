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
    BodyRewrite, ChunkRewrite, Header, HeaderEdits, OrphanRequest, PluginInfo, Request, Response,
    ResponsePlan, Service, Subprotocols, UpstreamRequest, UpstreamWebsocket,
};

/// The contract's package, as a component names its interfaces (`portico:plugin/types@0.3.0`).
pub(crate) const PACKAGE: &str = "portico:plugin";
/// The version of the contract these bindings implement; a plugin built against another one is
/// refused at load.
pub const VERSION: &str = "0.3.0";

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_is_the_one_the_wit_declares() {
        let wit = include_str!("../../../wit/plugin.wit");
        let declared = format!("package {}@{};", super::PACKAGE, super::VERSION);
        assert!(
            wit.lines().any(|line| line == declared),
            "wit/plugin.wit does not declare {declared}"
        );
    }

    #[test]
    fn the_sdk_binds_the_same_contract() {
        // The SDK carries its own copy so that it builds outside this repository; it must be
        // this one, byte for byte.
        assert!(
            include_str!("../../../wit/plugin.wit")
                == include_str!("../../../plugins/sdk/wit/plugin.wit"),
            "plugins/sdk/wit/plugin.wit differs from wit/plugin.wit: copy it over"
        );
    }
}
