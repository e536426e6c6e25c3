//! The Python plugin SDK's own tests (`plugins/sdk-python/tests`, stdlib `unittest`): its
//! defaults and rewrite rules against the cases the Rust crates are tested with
//! (`plugins/rewrite/tests/cases.json`), its records against the contract, and the Python twin
//! of the Gradio plugin. Run from here so the README's test command covers them.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_sdk_passes_its_tests() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the repository");
    let output = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "plugins/sdk-python/tests",
        ])
        // No `__pycache__` left in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(repository)
        .output()
        .expect("python3 runs (Debian: apt-get install python3)");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python SDK's tests failed:\n{report}"
    );
    assert!(report.contains("\nOK"), "{report}");
}
