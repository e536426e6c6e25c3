//! Portico: a framework-aware reverse proxy that serves each container's web app under
//! `/proxy/{id}/`, with per-framework behaviour supplied by sandboxed WebAssembly plugins.
//!
//! A request enters [`server`], finds its service in [`registry`], asks its plugin in
//! [`plugin`], and is forwarded by [`proxy`].

pub mod config;
pub mod metrics;
pub mod path;
pub mod plugin;
pub mod proxy;
pub mod registry;
pub mod scaffold;
pub mod server;
pub mod trial;
mod watch;
