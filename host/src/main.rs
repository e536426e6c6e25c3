//! The `portico` command: `serve` (the default) runs the proxy; `plugin` inspects plugins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portico::plugin::{
    self, IsolationPolicy, PluginRegistry, PluginSource, Runtime, RuntimeConfig,
};

// Every proxied request allocates many small, short-lived buffers across worker threads;
// glibc's allocator showed up as the largest single cost under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A framework-aware reverse proxy with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: portico::server::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve(portico::server::ServeArgs),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate a plugin against the contract, instantiate it in the sandbox, print its info.
    Check {
        /// The component to check.
        file: PathBuf,
    },
    /// Dry-run a plugin: print what each hook answers for a request (and a response).
    ///
    /// e.g. `portico plugin try my.wasm --type dash --path /_dash-layout --status 302
    /// --location /login --header 'accept:text/html'`
    Try(Box<portico::trial::TrialArgs>),
    /// Write a new plugin project, in Rust or Python, that builds with only crates.io or PyPI
    /// reachable (the SDK is written into it from this binary).
    New {
        /// The plugin's name, also its first service type: a-z, 0-9 and -.
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where the project directory is made.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// List the bundled plugins and those in the plugins directory.
    List {
        /// The plugins directory.
        #[arg(long, default_value = "./plugins.d")]
        plugins_dir: PathBuf,
    },
}

/// Languages `plugin new` writes projects in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Python,
}

fn main() -> ExitCode {
    portico::server::init_logging();
    let cli = Cli::parse();
    // Requests are served on the worker threads `serve` starts; this runtime only runs the
    // control plane (configuration and plugin reloads, Docker discovery, signals).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => portico::server::serve(cli.serve)
                .await
                .map_err(anyhow::Error::from),
            Some(Command::Serve(args)) => portico::server::serve(args)
                .await
                .map_err(anyhow::Error::from),
            Some(Command::Plugin(PluginCommand::Check { file })) => check(&file).await,
            Some(Command::Plugin(PluginCommand::List { plugins_dir })) => list(plugins_dir).await,
            Some(Command::Plugin(PluginCommand::New { name, lang, dir })) => {
                let written = match lang {
                    Lang::Rust => portico::scaffold::new_rust_plugin(&name, &dir),
                    Lang::Python => portico::scaffold::new_python_plugin(&name, &dir),
                };
                written.map(|root| {
                    println!(
                        "wrote {}; build it with {}/build.sh",
                        root.display(),
                        root.display()
                    );
                })
            }
            Some(Command::Plugin(PluginCommand::Try(args))) => portico::trial::run(&args)
                .await
                .map(|report| print!("{report}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(file: &PathBuf) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let info = plugin::check(&runtime, &wasm)
        .await
        .with_context(|| format!("checking {}", file.display()))?;
    println!("{} is a valid Portico plugin", file.display());
    println!("  name:          {}", info.name);
    println!("  version:       {}", info.version);
    println!("  service types: {}", info.service_types.join(", "));
    if let Some(port) = info.default_port {
        println!("  default port:  {port}");
    }
    if let Some(health) = &info.health_path {
        println!("  health path:   {health}");
    }
    println!(
        "  prefix:        {}",
        if info.keep_prefix { "kept" } else { "stripped" }
    );
    if !info.detect.is_empty() {
        println!("  detects:       {}", info.detect.join(", "));
    }
    if !info.claim_prefixes.is_empty() {
        println!("  claims under:  {}", info.claim_prefixes.join(", "));
    }
    if !info.rewrite_content_types.is_empty() {
        println!(
            "  rewrites:      {} (up to {} bytes)",
            info.rewrite_content_types.join(", "),
            info.max_rewrite_bytes
        );
    }
    Ok(())
}

async fn list(plugins_dir: PathBuf) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let registry: Arc<PluginRegistry> =
        PluginRegistry::load(runtime, Some(plugins_dir), IsolationPolicy::default()).await?;
    println!(
        "{:<12} {:<10} {:<24} SOURCE",
        "NAME", "VERSION", "SERVICE TYPES"
    );
    for plugin in registry.plugins() {
        let source = match plugin.source() {
            PluginSource::Bundled => "bundled".to_owned(),
            PluginSource::File(path) => path.display().to_string(),
        };
        let info = plugin.info();
        println!(
            "{:<12} {:<10} {:<24} {source}",
            info.name,
            info.version,
            info.service_types.join(",")
        );
    }
    Ok(())
}
