//! Portico: a framework-aware reverse proxy that serves each container's web app under
//! `/proxy/{id}/`, with per-framework behaviour supplied by sandboxed WebAssembly plugins.

pub mod plugin;
pub mod server;
