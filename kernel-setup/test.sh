#!/usr/bin/env bash
# Set-up (idempotent), then every check: formatting, clippy, the docs (crates and binaries), and the
# test suite (library tests and every notebook executed through the kernel with the CI budget).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash kernel-setup/setup.sh
export SGM_BUDGET="${SGM_BUDGET:-ci}"
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "==> cargo doc of the crates and the two commands (broken links and private links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p sgm -p sgm_homework -p sgm-notebook-programs
# The command line's items are private: document them too, as the binary's docs did.
RUSTDOCFLAGS="-D warnings" cargo rustdoc --quiet -p sgm-cli --lib -- --document-private-items
echo "==> cargo test (notebooks with SGM_BUDGET=$SGM_BUDGET)"
cargo test --workspace
