//! The axum server: routes, listeners and graceful shutdown.

use std::path::PathBuf;

/// Options of `portico serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("not implemented yet")]
    NotReady,
}

/// Runs the proxy until interrupted.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let _ = args;
    Err(ServeError::NotReady)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
