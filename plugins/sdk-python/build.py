#!/usr/bin/env python3
"""Builds a Python plugin into a Portico plugin component with componentize-py.

    python3 plugins/sdk-python/build.py APP_DIR -o OUT.wasm [--module app] [--venv DIR]

APP_DIR holds the plugin's module (`app.py` by default), which ends with
`WitWorld = export(MyPlugin)`. The component is built against the contract shipped with this
SDK (`wit/plugin.wit` next to this file), from copies of APP_DIR and the SDK package. The
componentize-py it uses is installed once into a virtual environment (by default
`target/componentize-py-venv` of the repository) and re-used while its marker file names the
pinned version. Needs Python 3.11 or later and, the first time, access to PyPI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPONENTIZE_PY = "componentize-py==0.25.1"
"""The componentize-py this SDK is built and tested with."""

SDK = Path(__file__).resolve().parent
REPOSITORY = SDK.parents[1]
WIT = SDK / "wit"
WORLD = "plugin"
MARKER = "portico-componentize-py.txt"
"""The file in the virtual environment that names the componentize-py installed in it."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Build a Python Portico plugin into a component with componentize-py."
    )
    parser.add_argument("app_dir", type=Path, help="the directory holding the plugin's module")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .wasm to write")
    parser.add_argument(
        "--module", default="app", help="the plugin's module in APP_DIR (default: app)"
    )
    parser.add_argument(
        "--venv",
        type=Path,
        default=REPOSITORY / "target" / "componentize-py-venv",
        help="where componentize-py is installed and cached "
        "(default: target/componentize-py-venv of the repository)",
    )
    args = parser.parse_args()

    module = args.app_dir / f"{args.module}.py"
    if not module.is_file():
        parser.error(f"{module} does not exist: APP_DIR must hold the plugin's module")
    componentize_py = ensure_componentize_py(args.venv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="portico-plugin-") as staging:
        app_dir, sdk_dir = stage(args.app_dir, Path(staging))
        command = [
            str(componentize_py),
            "--wit-path",
            str(WIT),
            "--world",
            WORLD,
            "componentize",
            "--python-path",
            str(app_dir),
            "--python-path",
            str(sdk_dir),
            args.module,
            "--output",
            str(args.output.resolve()),
        ]
        built = subprocess.run(command, check=False)
    if built.returncode != 0:
        print(f"build.py: componentize-py failed building {module}", file=sys.stderr)
        return built.returncode
    seconds = time.monotonic() - started
    size = args.output.stat().st_size
    print(f"built {args.output} ({size / 2**20:.1f} MiB) in {seconds:.1f} s")
    return 0


def stage(app_dir: Path, staging: Path) -> tuple[Path, Path]:
    """Copies the plugin's directory and the SDK package into `staging` and returns the two
    Python paths to build from. componentize-py runs the modules while it builds and the
    interpreter writes their bytecode next to them: staged, the sources stay untouched."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    app = staging / "app"
    shutil.copytree(app_dir, app, ignore=skip)
    sdk = staging / "sdk"
    shutil.copytree(SDK / "portico_plugin", sdk / "portico_plugin", ignore=skip)
    return app, sdk


def ensure_componentize_py(venv: Path) -> Path:
    """The componentize-py executable of `venv`, installing the pinned version there first
    unless the marker says it already is."""
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    executable = bin_dir / ("componentize-py.exe" if os.name == "nt" else "componentize-py")
    marker = venv / MARKER
    if marker.is_file() and marker.read_text().strip() == COMPONENTIZE_PY and executable.is_file():
        return executable
    print(f"build.py: installing {COMPONENTIZE_PY} into {venv}", file=sys.stderr)
    marker.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            COMPONENTIZE_PY,
        ],
        check=True,
    )
    marker.write_text(COMPONENTIZE_PY + "\n")
    return executable


if __name__ == "__main__":
    sys.exit(main())
