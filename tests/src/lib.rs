//! Shared helpers for the integration tests.

pub mod auth;
pub mod docker;
pub mod e2e;
pub mod proxy;
pub mod python;
pub mod swarm;
