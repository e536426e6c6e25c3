//! Plugins written in Python with the Python SDK (`plugins/sdk-python`), built into components
//! by its `build.py` with componentize-py, as a plugin author builds them.

use std::fs::File;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::e2e::target_dir;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the repository")
        .to_path_buf()
}

/// The component built from `tests/fixtures/{fixture}` (its `app.py`), at
/// `target/python-plugins/{fixture}/{fixture}.wasm`. The first build installs componentize-py
/// into `target/componentize-py-venv` (once for every later build); a build is reused while
/// the fixture, the SDK and its build script are unchanged. A file lock keeps concurrent test
/// processes from building over each other.
pub fn plugin(fixture: &str) -> anyhow::Result<PathBuf> {
    let repository = repository();
    let sdk = repository.join("plugins/sdk-python");
    let source = repository.join("tests/fixtures").join(fixture);
    let out_dir = target_dir().join("python-plugins").join(fixture);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {out_dir:?}"))?;
    let lock = File::create(out_dir.join("build.lock")).context("creating the build lock")?;
    lock.lock().context("locking the build")?;
    let wasm = out_dir.join(format!("{fixture}.wasm"));
    let marker = out_dir.join("sources.txt");
    let fingerprint = fingerprint(&[&sdk, &source])?;
    if wasm.is_file() && std::fs::read_to_string(&marker).ok() == Some(fingerprint.clone()) {
        return Ok(wasm);
    }
    eprintln!(
        "python plugin: building {} (componentize-py)",
        wasm.display()
    );
    let output = Command::new("python3")
        .arg(sdk.join("build.py"))
        .arg(&source)
        .arg("-o")
        .arg(&wasm)
        .arg("--venv")
        .arg(target_dir().join("componentize-py-venv"))
        .output()
        .context("running python3 plugins/sdk-python/build.py")?;
    anyhow::ensure!(
        output.status.success(),
        "building the Python plugin {fixture} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&marker, fingerprint).context("writing the build marker")?;
    Ok(wasm)
}

/// A fingerprint of the files under `dirs` (paths and contents; caches left out).
fn fingerprint(dirs: &[&Path]) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for dir in dirs {
        collect(dir, &mut files)?;
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in &files {
        file.hash(&mut hasher);
        std::fs::read(file)
            .with_context(|| format!("reading {file:?}"))?
            .hash(&mut hasher);
    }
    Ok(format!("{} files, {:016x}\n", files.len(), hasher.finish()))
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name == "__pycache__" || name.ends_with(".pyc") || name.ends_with(".wasm") {
            continue;
        }
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}
