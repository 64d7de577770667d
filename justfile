# Triggerfish tasks. Every recipe wraps a plain command, so `just` is
# optional: the README gives the commands themselves.

# Serve the demo tenant (example plugins live) on 127.0.0.1:8080.
run listen="127.0.0.1:8080":
    cargo xtask demo --listen {{listen}}

# Build every plugin and test guest for wasm32-wasip2 (adds the target).
build-plugins:
    cargo xtask build-plugins

# Three hosts, one nats-server and HAProxy on loopback (clients on 8080),
# the demo tenant served by all; Ctrl-C drains and stops them
# (needs nats-server and haproxy: apt-get install -y nats-server haproxy).
cluster:
    deploy/cluster.sh

# Rolling restart, one host of `just cluster` (1-3): SIGTERM, drained,
# started again; HAProxy sends its requests elsewhere meanwhile.
cluster-restart host:
    deploy/cluster.sh restart {{host}}

# Run the whole test suite, as CI does.
test:
    cargo test

# Benchmarks: release build, in-process and HTTP figures against native
# Rust and a Node.js baseline; writes BENCHMARKS.md (needs wrk and node).
bench seconds="10":
    cargo xtask bench --seconds {{seconds}}

# Dev loop: rebuild the plugins into the running demo's folder; the host
# picks the new builds up without a restart.
dev:
    cargo xtask build-plugins && cargo xtask demo-plugins

# Write a new plugin crate under plugins/ (see "Write your first plugin").
new name trigger:
    cargo xtask new {{name}} --trigger {{trigger}}

# Build the plugins and put one into the running demo's tenant folder.
install name:
    cargo xtask install {{name}}

# Build the JavaScript plugin (installs componentize-js into target/).
build-js:
    cargo xtask build-js

# Check a component: which triggers it serves, or why it is not a plugin.
check file:
    cargo run -q -p triggerfish -- check {{file}}

# Format and lint.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
