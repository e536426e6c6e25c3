//! Builds plugin crates of this workspace into WebAssembly components, for build scripts.
//!
//! The host embeds the bundled plugins and the tests load fixture plugins; both get them from a
//! nested `cargo build --target wasm32-wasip2` into a target directory of its own (so it never
//! waits on the lock of the build that runs the script). The target is added with rustup when
//! it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target plugins are compiled for.
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile plugins are built with (defined in the workspace `Cargo.toml`).
pub const PROFILE: &str = "wasm";

/// Variables a build script inherits that must not leak into the nested build: flags and
/// wrappers meant for the host target (clippy's driver among them).
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_LLVM_COV",
    "CARGO_LLVM_COV_TARGET_DIR",
];

/// Builds `packages` (cargo package names) of the workspace at `workspace` and returns each
/// package's component, in the order given.
///
/// Prints `cargo:rerun-if-changed` lines for the plugin sources and the WIT contract.
pub fn build_components(workspace: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut args = Vec::new();
    for package in packages {
        args.extend(["-p", package]);
    }
    let out = cargo_build(workspace, &args, &format!("the plugins {packages:?}"))?;
    packages
        .iter()
        .map(|package| component(&out, &package.replace('-', "_"), package))
        .collect()
}

/// Builds the examples `examples` of `package`, each declared with `crate-type = ["cdylib"]`,
/// and returns each one's component, in the order given: for fixture components that share a
/// package's dependencies instead of being packages of their own.
///
/// Prints `cargo:rerun-if-changed` lines as [`build_components`] does.
pub fn build_example_components(
    workspace: &Path,
    package: &str,
    examples: &[&str],
) -> Result<Vec<PathBuf>, String> {
    let mut args = vec!["-p", package];
    for example in examples {
        args.extend(["--example", example]);
    }
    let out = cargo_build(
        workspace,
        &args,
        &format!("the examples {examples:?} of {package}"),
    )?
    .join("examples");
    examples
        .iter()
        .map(|example| {
            component(
                &out,
                &example.replace('-', "_"),
                &format!("{package} example {example}"),
            )
        })
        .collect()
}

/// Runs the nested `cargo build` with `args` and returns the directory it writes to.
fn cargo_build(workspace: &Path, args: &[&str], what: &str) -> Result<PathBuf, String> {
    for watched in ["plugins", "wit", "tests/fixtures", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    ensure_target()?;
    let target_dir = workspace.join("target").join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--profile", PROFILE, "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .args(args);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    // A 64 KiB stack (Rust's default is 1 MiB) puts the pages a call touches (stack top, data,
    // first heap pages) at the start of linear memory, where the host resets them cheaply
    // between per-call instances.
    command.env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
    let status = command
        .status()
        .map_err(|err| format!("could not run cargo to build {what}: {err}"))?;
    if !status.success() {
        return Err(format!("building {what} for {TARGET} failed ({status})"));
    }
    Ok(target_dir.join(TARGET).join(PROFILE))
}

/// The component `{stem}.wasm` in `dir`, which the build of `what` should have written.
fn component(dir: &Path, stem: &str, what: &str) -> Result<PathBuf, String> {
    let path = dir.join(format!("{stem}.wasm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{what} built but {} is missing", path.display()))
    }
}

/// Adds the wasm target with rustup when the toolchain lacks it.
fn ensure_target() -> Result<(), String> {
    if target_installed() {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|err| {
            format!("the {TARGET} target is missing and rustup could not be run to add it: {err}")
        })?;
    if status.success() && target_installed() {
        Ok(())
    } else {
        Err(format!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed ({status})"
        ))
    }
}

fn target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(output) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
    else {
        return false;
    };
    let libdir = String::from_utf8_lossy(&output.stdout);
    output.status.success() && Path::new(libdir.trim()).is_dir()
}
