# Thin wrappers over cargo; CI runs the same commands.

# Run the proxy with the embedded default config (or pass --config FILE).
run *ARGS:
    cargo run --release -p portico -- {{ARGS}}

# The whole test suite (the README's test command).
test:
    cargo test --workspace

# Build the bundled plugins (also done by every host build).
plugins:
    cargo build -p portico

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks: the plugin cost of one request (a Rust plugin next to its Python twin, built with
# componentize-py from PyPI), then direct vs Portico vs nginx (needs wrk;
# nginx when installed). Figures are printed and saved under target/bench/.
bench:
    cargo build --release -p portico
    python3 plugins/sdk-python/build.py tests/fixtures/python-gradio -o target/python-plugins/python-gradio/python-gradio.wasm
    PORTICO_BENCH_PYTHON_PLUGIN={{justfile_directory()}}/target/python-plugins/python-gradio/python-gradio.wasm cargo bench -p portico --bench plugin_calls
    cargo bench -p portico --bench proxy
