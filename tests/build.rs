//! Builds the fixture plugins the tests load, and tells the tests where they are.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().expect("tests/ lies in the workspace");
    let paths = match portico_wasm_build::build_components(workspace, &["portico-fixture-hostile"])
    {
        Ok(paths) => paths,
        Err(err) => panic!("{err}"),
    };
    println!(
        "cargo:rustc-env=PORTICO_HOSTILE_WASM={}",
        paths[0].display()
    );
    let examples = match portico_wasm_build::build_example_components(
        workspace,
        "portico-fixture-hostile",
        &["plugin-0-1", "claims-everything"],
    ) {
        Ok(paths) => paths,
        Err(err) => panic!("{err}"),
    };
    println!(
        "cargo:rustc-env=PORTICO_PLUGIN_0_1_WASM={}",
        examples[0].display()
    );
    println!(
        "cargo:rustc-env=PORTICO_CLAIMS_EVERYTHING_WASM={}",
        examples[1].display()
    );
}
