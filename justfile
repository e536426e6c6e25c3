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

# Benchmarks: the plugin cost of one request.
bench:
    cargo bench -p portico --bench plugin_calls
