//! `portico plugin new`: writes a plugin project that builds anywhere with only crates.io
//! reachable. The SDK and the rules it re-exports are written into the project from this
//! binary (`vendor/sdk`, `vendor/rewrite`), so no Portico checkout is needed, and the SDK is
//! the one this Portico's contract version belongs to.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The SDK and rewrite sources, as this binary was built with them: (path in the project,
/// contents).
const VENDORED: &[(&str, &str)] = &[
    (
        "vendor/sdk/Cargo.toml",
        include_str!("../../plugins/sdk/Cargo.toml"),
    ),
    (
        "vendor/sdk/src/lib.rs",
        include_str!("../../plugins/sdk/src/lib.rs"),
    ),
    (
        "vendor/sdk/src/defaults.rs",
        include_str!("../../plugins/sdk/src/defaults.rs"),
    ),
    (
        "vendor/sdk/src/info.rs",
        include_str!("../../plugins/sdk/src/info.rs"),
    ),
    (
        "vendor/sdk/src/testing.rs",
        include_str!("../../plugins/sdk/src/testing.rs"),
    ),
    (
        "vendor/sdk/wit/plugin.wit",
        include_str!("../../plugins/sdk/wit/plugin.wit"),
    ),
    (
        "vendor/rewrite/Cargo.toml",
        include_str!("../../plugins/rewrite/Cargo.toml"),
    ),
    (
        "vendor/rewrite/src/lib.rs",
        include_str!("../../plugins/rewrite/src/lib.rs"),
    ),
];

/// The Python SDK and its build script, as this binary was built with them.
const VENDORED_PYTHON: &[(&str, &str)] = &[
    (
        "vendor/portico_plugin/__init__.py",
        include_str!("../../plugins/sdk-python/portico_plugin/__init__.py"),
    ),
    (
        "vendor/portico_plugin/defaults.py",
        include_str!("../../plugins/sdk-python/portico_plugin/defaults.py"),
    ),
    (
        "vendor/portico_plugin/plugin.py",
        include_str!("../../plugins/sdk-python/portico_plugin/plugin.py"),
    ),
    (
        "vendor/portico_plugin/records.py",
        include_str!("../../plugins/sdk-python/portico_plugin/records.py"),
    ),
    (
        "vendor/portico_plugin/rewrite.py",
        include_str!("../../plugins/sdk-python/portico_plugin/rewrite.py"),
    ),
    (
        "vendor/portico_plugin/testing.py",
        include_str!("../../plugins/sdk-python/portico_plugin/testing.py"),
    ),
    (
        "vendor/portico_plugin/world.py",
        include_str!("../../plugins/sdk-python/portico_plugin/world.py"),
    ),
    (
        "vendor/build.py",
        include_str!("../../plugins/sdk-python/build.py"),
    ),
    (
        "vendor/wit/plugin.wit",
        include_str!("../../plugins/sdk-python/wit/plugin.wit"),
    ),
];

/// Writes project `name` in `dir/name` and returns its path. Refuses an existing directory
/// and a name that is not a plugin name.
pub fn new_rust_plugin(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let root = project_dir(name, dir)?;
    let crate_name = format!("portico-plugin-{name}");
    let artifact = crate_name.replace('-', "_");
    let type_name = type_name(name);
    let files: Vec<(String, String)> = VENDORED
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .chain([
            ("Cargo.toml".to_owned(), cargo_toml(&crate_name)),
            ("src/lib.rs".to_owned(), lib_rs(name, &type_name)),
            ("build.sh".to_owned(), build_sh(name, &artifact)),
            ("README.md".to_owned(), readme(name)),
            (".gitignore".to_owned(), "/target/\n/*.wasm\n".to_owned()),
        ])
        .collect();
    write(&root, files)?;
    Ok(root)
}

/// Writes Python project `name` in `dir/name` and returns its path: the plugin in `plugin/`,
/// its unit tests in `tests/`, and the Python SDK and its build script in `vendor/`. Building
/// needs Python 3.11 and PyPI (for componentize-py, installed once into `.componentize-py/`).
pub fn new_python_plugin(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let root = project_dir(name, dir)?;
    let class = type_name(name);
    let files: Vec<(String, String)> = VENDORED_PYTHON
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .chain([
            ("plugin/app.py".to_owned(), app_py(name, &class)),
            ("tests/test_app.py".to_owned(), test_app_py(name, &class)),
            ("build.sh".to_owned(), python_build_sh(name)),
            ("README.md".to_owned(), python_readme(name)),
            (
                ".gitignore".to_owned(),
                "/.componentize-py/\n/*.wasm\n__pycache__/\n".to_owned(),
            ),
        ])
        .collect();
    write(&root, files)?;
    Ok(root)
}

/// `dir/name`, once `name` is checked and the directory known not to exist.
fn project_dir(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    validate(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} exists already; choose another name or --dir",
            root.display()
        );
    }
    Ok(root)
}

/// Writes `files` under `root` and makes its `build.sh` executable.
fn write(root: &Path, files: Vec<(String, String)>) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    make_executable(&root.join("build.sh"))
}

/// A plugin name: what `info` reports and the service type it starts with.
fn validate(name: &str) -> anyhow::Result<()> {
    let valid = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("{name:?} is not a plugin name: up to 32 of a-z, 0-9 and -, starting with a letter");
    }
    Ok(())
}

/// `my-framework` -> `MyFramework`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn cargo_toml(crate_name: &str) -> String {
    format!(
        r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
portico-plugin-sdk = {{ path = "vendor/sdk" }}

# A project of its own, even inside another Cargo workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
    )
}

fn lib_rs(name: &str, type_name: &str) -> String {
    format!(
        r#"//! The Portico plugin for {name} apps.
//!
//! Every hook has a default that is Portico's generic behaviour (prefix stripped,
//! `x-forwarded-prefix` sent, `Location` and cookie paths kept under the prefix); override only
//! what {name} needs. See the Portico plugin guide for what each hook does.

use portico_plugin_sdk::{{OrphanRequest, Plugin, PluginInfo, claim_by_prefix, export_plugin}};

/// The {name} handler.
#[derive(Debug)]
pub struct {type_name};

/// Paths {name}'s pages may ask for without the prefix, and how strongly each belongs to it.
/// Portico asks `claim` only about paths under these prefixes.
const CLAIMS: [(&str, u32); 1] = [("/_{name}/", 100)];

impl Plugin for {type_name} {{
    fn info() -> PluginInfo {{
        PluginInfo::new("{name}", env!("CARGO_PKG_VERSION"))
            .service_types(&["{name}"])
            .detect(&["{name}"])
            .claim_prefixes(&CLAIMS.map(|(prefix, _)| prefix))
    }}

    fn claim(req: OrphanRequest) -> u32 {{
        claim_by_prefix(&CLAIMS, &req.path)
    }}
}}

export_plugin!({type_name});

#[cfg(test)]
mod tests {{
    use super::*;
    use portico_plugin_sdk::{{header, testing}};

    #[test]
    fn the_prefix_is_stripped_and_announced() {{
        let upstream = {type_name}::on_request(testing::request("{name}", "/page"));
        assert_eq!(upstream.path, "/page");
        assert_eq!(
            header(&upstream.headers.set, "x-forwarded-prefix"),
            Some("/proxy/app")
        );
    }}

    #[test]
    fn claims_its_own_paths_only() {{
        assert_eq!({type_name}::claim(testing::orphan("/_{name}/api")), 100);
        assert_eq!({type_name}::claim(testing::orphan("/static/x.js")), 0);
    }}
}}
"#
    )
}

fn build_sh(name: &str, artifact: &str) -> String {
    format!(
        r#"#!/usr/bin/env sh
# Builds {name}.wasm, the WebAssembly component Portico loads. Needs Rust (rustup) and crates.io.
set -eu
cd "$(dirname "$0")"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
cp "target/wasm32-wasip2/release/{artifact}.wasm" "{name}.wasm"
echo "built {name}.wasm; next: portico plugin check {name}.wasm"
"#
    )
}

fn readme(name: &str) -> String {
    let contract = crate::plugin::CONTRACT_VERSION;
    format!(
        r#"# {name}: a Portico plugin

```sh
cargo test                                   # the plugin's unit tests, natively
./build.sh                                   # builds {name}.wasm (adds the wasm32-wasip2 target if missing)
portico plugin check {name}.wasm             # validates it in Portico's sandbox and prints its info
portico plugin try {name}.wasm --path /page  # what each hook answers for a request
cp {name}.wasm /path/to/plugins.d/           # install: Portico loads it within a second
```

Services with `type = "{name}"` (or the label `portico.type={name}`) then use it. `src/lib.rs`
is the plugin; `vendor/` holds the Portico plugin SDK it was created with (contract
`portico:plugin@{contract}`). When a new Portico implements a newer contract, run
`portico plugin new` with it for a fresh `vendor/`, make the changes "Upgrading a plugin" in
Portico's plugin guide lists, and rebuild.
"#
    )
}

fn app_py(name: &str, class: &str) -> String {
    format!(
        r#""""The Portico plugin for {name} apps.

Every hook has a default that is Portico's generic behaviour (prefix stripped,
`x-forwarded-prefix` sent, `Location` and cookie paths kept under the prefix); override only what
{name} needs. See the Portico plugin guide for what each hook does.
"""

from portico_plugin import OrphanRequest, Plugin, PluginInfo, claim_by_prefix, export

CLAIMS = [("/_{name}/", 100)]
"""Paths {name}'s pages may ask for without the prefix, and how strongly each belongs to it.
Portico asks `claim` only about paths under these prefixes."""


class {class}(Plugin):
    """The {name} handler."""

    def info(self) -> PluginInfo:
        return PluginInfo(
            "{name}",
            "0.1.0",
            service_types=["{name}"],
            detect=["{name}"],
            claim_prefixes=[prefix for prefix, _ in CLAIMS],
        )

    def claim(self, req: OrphanRequest) -> int:
        return claim_by_prefix(CLAIMS, req.path)


WitWorld = export({class})
"#
    )
}

fn test_app_py(name: &str, class: &str) -> String {
    format!(
        r#""""Unit tests of the plugin's hooks, under plain Python: `python3 -m unittest discover -s tests`."""

import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugin"), str(ROOT / "vendor")]

from app import {class}  # noqa: E402
from portico_plugin import header, testing  # noqa: E402


class {class}Test(unittest.TestCase):
    def test_the_prefix_is_stripped_and_announced(self) -> None:
        upstream = {class}().on_request(testing.request("{name}", "/page"))
        self.assertEqual(upstream.path, "/page")
        self.assertEqual(header(upstream.headers.set, "x-forwarded-prefix"), "/proxy/app")

    def test_claims_its_own_paths_only(self) -> None:
        self.assertEqual({class}().claim(testing.orphan("/_{name}/api")), 100)
        self.assertEqual({class}().claim(testing.orphan("/static/x.js")), 0)


if __name__ == "__main__":
    unittest.main()
"#
    )
}

fn python_build_sh(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env sh
# Builds {name}.wasm, the WebAssembly component Portico loads, from plugin/app.py. Needs
# Python 3.11 and, the first time, PyPI: componentize-py is installed into .componentize-py/
# (or $PORTICO_COMPONENTIZE_VENV) and reused.
set -eu
cd "$(dirname "$0")"
python3 -m unittest discover -s tests
python3 vendor/build.py plugin -o {name}.wasm --venv "${{PORTICO_COMPONENTIZE_VENV:-.componentize-py}}"
echo "next: portico plugin check {name}.wasm"
"#
    )
}

fn python_readme(name: &str) -> String {
    let contract = crate::plugin::CONTRACT_VERSION;
    format!(
        r#"# {name}: a Portico plugin in Python

```sh
python3 -m unittest discover -s tests        # the plugin's unit tests, under plain Python
./build.sh                                   # the tests, then {name}.wasm (componentize-py, installed once)
portico plugin check {name}.wasm             # validates it in Portico's sandbox and prints its info
portico plugin try {name}.wasm --path /page  # what each hook answers for a request
cp {name}.wasm /path/to/plugins.d/           # install: Portico loads it within a second
```

Services with `type = "{name}"` (or the label `portico.type={name}`) then use it.
`plugin/app.py` is the plugin: a `Plugin` subclass and the line `WitWorld = export(...)`.
Keep nothing between calls on `self` or in globals, and import only the standard library and
`portico_plugin`. `vendor/` holds the Portico Python SDK it was created with (contract
`portico:plugin@{contract}`) and its build script. When a new Portico implements a newer
contract, run `portico plugin new --lang python` with it for a fresh `vendor/`, make the
changes "Upgrading a plugin" in Portico's plugin guide lists, and rebuild.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_typed() {
        assert!(validate("my-framework2").is_ok());
        for bad in ["", "My", "9lives", "a_b", "a/b", &"x".repeat(33)] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(type_name("my-framework"), "MyFramework");
        assert_eq!(type_name("nicegui"), "Nicegui");
    }

    #[test]
    fn a_project_is_written_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = new_rust_plugin("demo", dir.path()).expect("written");
        for file in [
            "Cargo.toml",
            "src/lib.rs",
            "build.sh",
            "vendor/sdk/wit/plugin.wit",
        ] {
            assert!(root.join(file).is_file(), "{file}");
        }
        let again = new_rust_plugin("demo", dir.path());
        assert!(again.is_err(), "an existing project is not overwritten");
    }
}
