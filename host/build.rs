//! Builds the bundled plugins and embeds them in the binary, so `portico` needs no files.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The bundled plugins: (name, cargo package).
const BUNDLED: &[(&str, &str)] = &[
    ("generic", "portico-plugin-generic"),
    ("streamlit", "portico-plugin-streamlit"),
    ("fastapi", "portico-plugin-fastapi"),
    ("flask", "portico-plugin-flask"),
    ("dash", "portico-plugin-dash"),
    ("jupyter", "portico-plugin-jupyter"),
    ("voila", "portico-plugin-voila"),
    ("bokeh", "portico-plugin-bokeh"),
    ("solara", "portico-plugin-solara"),
    ("gradio", "portico-plugin-gradio"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().expect("host/ lies in the workspace");
    let packages: Vec<&str> = BUNDLED.iter().map(|(_, package)| *package).collect();
    let paths = match portico_wasm_build::build_components(workspace, &packages) {
        Ok(paths) => paths,
        Err(err) => panic!("{err}"),
    };
    let mut table = String::from("&[\n");
    for ((name, _), path) in BUNDLED.iter().zip(paths) {
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("bundled.rs"), table).expect("writing bundled.rs");
}
