//! The plugin SDK: guest bindings for `wit/plugin.wit` and the [`Plugin`] trait.
//!
//! A plugin implements [`Plugin`], overriding only the hooks its framework needs, and exports it
//! with [`export_plugin!`]. Every hook has a default that is Portico's generic behaviour; the
//! defaults are also available as functions in [`defaults`] so an override can build on them.
//!
//! This SDK implements the contract `portico:plugin@0.3.0`. A plugin built with an older SDK is
//! refused by a Portico that implements 0.3: rebuild it with this SDK. From 0.2, write
//! `body: BodyRewrite::Whole` in response plans where it wrote `rewrite_body: true`
//! (`BodyRewrite::Keep` for false). From 0.1, also declare the un-prefixed paths `claim`
//! answers for with [`PluginInfo::claim_prefixes`].
//!
//! ```ignore
//! use portico_plugin_sdk::{OrphanRequest, Plugin, PluginInfo, export_plugin};
//!
//! struct MyFramework;
//!
//! impl Plugin for MyFramework {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("myframework", env!("CARGO_PKG_VERSION"))
//!             .service_types(&["myframework"])
//!             .default_port(9000)
//!             .claim_prefixes(&["/_myframework/"])
//!     }
//!
//!     fn claim(req: OrphanRequest) -> u32 {
//!         // Only called for paths under a declared prefix.
//!         if req.path.starts_with("/_myframework/") { 100 } else { 0 }
//!     }
//! }
//!
//! export_plugin!(MyFramework);
//! ```

pub mod defaults;
mod info;
pub mod testing;

pub use portico_rewrite as rewrite;

/// Bindings generated from the contract. Only this crate runs `generate!`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "portico_plugin_sdk::bindings",
    });
}

pub use bindings::portico::plugin::types::{
    BodyRewrite, ChunkRewrite, Header, HeaderEdits, OrphanRequest, PluginInfo, Request, Response,
    ResponsePlan, Service, Subprotocols, UpstreamRequest, UpstreamWebsocket,
};

/// A framework plugin. Each hook runs in the phase its name says; see `wit/plugin.wit` for when
/// each one is called and what the host does with its answer.
pub trait Plugin {
    /// True when the app expects the `/proxy/{id}` prefix on upstream paths. Used by the
    /// default hooks and reported in [`PluginInfo::keep_prefix`].
    const KEEP_PREFIX: bool = false;

    /// Describes the plugin; runs once, at load.
    fn info() -> PluginInfo;

    /// The upstream path, query and header edits of an HTTP request.
    /// Default: [`defaults::on_request`].
    fn on_request(req: Request) -> UpstreamRequest {
        defaults::on_request(&req, Self::KEEP_PREFIX)
    }

    /// The upstream path, subprotocols and header edits of a WebSocket handshake.
    /// Default: [`defaults::on_websocket`] (subprotocols passed through).
    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        let _ = protocols;
        defaults::on_websocket(&req, Self::KEEP_PREFIX)
    }

    /// How sure the plugin is that an un-prefixed path is its framework's; 0 means not mine.
    /// Called only for paths that start with one of the prefixes declared with
    /// [`PluginInfo::claim_prefixes`]; [`claim_by_prefix`] scores a path from such a table.
    /// Default: 0.
    fn claim(req: OrphanRequest) -> u32 {
        let _ = req;
        0
    }

    /// Header edits for a response and whether to rewrite its body.
    /// Default: [`defaults::on_response`].
    fn on_response(resp: Response) -> ResponsePlan {
        defaults::on_response(&resp)
    }

    /// The rewritten body, or `None` to leave it unchanged; called when [`Plugin::on_response`]
    /// answered [`BodyRewrite::Whole`]. Default: `None`.
    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        let _ = (resp, body);
        None
    }

    /// One step of a streamed rewrite, called for each piece of the body when
    /// [`Plugin::on_response`] answered [`BodyRewrite::Streamed`]: `chunk` starts with the bytes
    /// the previous call held back, `state` is what it returned. Calls may run in different
    /// instances, so keep nothing in globals. [`defaults::rewrite_chunk_with`] turns a rewrite
    /// that works within a line or a tag into a streamed one. Default: the chunk unchanged.
    fn rewrite_chunk(resp: Response, chunk: Vec<u8>, state: Vec<u8>, last: bool) -> ChunkRewrite {
        let _ = (resp, state, last);
        defaults::unchanged_chunk(chunk)
    }
}

impl<T: Plugin> bindings::Guest for T {
    fn info() -> PluginInfo {
        let mut info = T::info();
        info.keep_prefix = T::KEEP_PREFIX;
        info
    }

    fn on_request(req: Request) -> UpstreamRequest {
        T::on_request(req)
    }

    fn on_websocket(req: Request, protocols: Vec<String>) -> UpstreamWebsocket {
        T::on_websocket(req, protocols)
    }

    fn claim(req: OrphanRequest) -> u32 {
        T::claim(req)
    }

    fn on_response(resp: Response) -> ResponsePlan {
        T::on_response(resp)
    }

    fn rewrite_body(resp: Response, body: Vec<u8>) -> Option<Vec<u8>> {
        T::rewrite_body(resp, body)
    }

    fn rewrite_chunk(resp: Response, chunk: Vec<u8>, state: Vec<u8>, last: bool) -> ChunkRewrite {
        T::rewrite_chunk(resp, chunk, state, last)
    }
}

/// Exports a type implementing [`Plugin`] as the component's plugin.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        $crate::bindings::__export_plugin_world!($plugin with_types_in $crate::bindings);
    };
}

/// The score of the first `(prefix, score)` entry whose prefix starts `path`, or 0.
///
/// A plugin that keeps its claims in one table can declare the prefixes and score paths from
/// the same list, so the two never disagree:
///
/// ```
/// # use portico_plugin_sdk::claim_by_prefix;
/// const CLAIMS: [(&str, u32); 2] = [("/_stcore/", 100), ("/static/", 40)];
/// assert_eq!(claim_by_prefix(&CLAIMS, "/static/js/main.js"), 40);
/// assert_eq!(claim_by_prefix(&CLAIMS, "/other"), 0);
/// // In `info`: `.claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))`.
/// ```
pub fn claim_by_prefix(claims: &[(&str, u32)], path: &str) -> u32 {
    claims
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map_or(0, |(_, score)| *score)
}

/// The value of the first header called `name` (lower case), if the host passed it.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|header| header.name == name)
        .map(|header| header.value.as_str())
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

impl HeaderEdits {
    /// No changes.
    pub fn none() -> Self {
        Self {
            set: Vec::new(),
            remove: Vec::new(),
        }
    }
}
