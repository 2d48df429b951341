#!/usr/bin/env bash
# Builds, here, what a GPU machine without Rust needs to check the GPU paths (issue 10):
# .gpu/bundle.tar.xz (git-ignored; about 7 MB, so it travels with the working tree within the
# device tool's 64 MiB), holding
#   tests/<name>   every library test binary (the workspace's unit tests and tests/*.rs but the
#                  five that need Jupyter, bubblewrap or chromium), stripped;
#   bin/sgm, bin/sgm-notebook   the release command line and notebook programs, stripped;
#   manifest       the commit and build it came from.
# Run kernel-setup/gpu-check.sh there, carrying `.gpu` and `data/mnist_5k.csv.gz` (README, "The
# GPU").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash kernel-setup/setup.sh
# Only the bundle is replaced: other files carried in .gpu (a configuration for gpu-check.sh) stay.
rm -rf .gpu/stage .gpu/bundle.tar.xz
S=.gpu/stage
mkdir -p $S/tests $S/bin

echo "==> release binaries: sgm, sgm-notebook"
cargo build --quiet --release -p sgm-cli -p sgm-notebook-programs
strip -o $S/bin/sgm target/release/sgm
strip -o $S/bin/sgm-notebook target/release/sgm-notebook

echo "==> test binaries (the tests' profile)"
# Jupyter (notebooks, homework, assignment), bubblewrap (sandbox) and chromium (browser) are
# CPU-side machinery the GPU machine does not have; every other test target travels.
SKIP="notebooks homework assignment sandbox browser"
cargo test --quiet --workspace --no-run --message-format=json-render-diagnostics \
  | .venv/bin/python -c '
import json, sys
skip = set(sys.argv[1].split())
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    if t["name"] in skip:
        continue
    # integration tests keep their name; unit tests of a library or binary get its kind
    name = t["name"] if "test" in t["kind"] else t["name"] + "-" + t["kind"][0]
    print(name, m["executable"])
' "$SKIP" > $S/list
while read -r name exe; do
  strip -o "$S/tests/$name" "$exe"
done < $S/list
rm $S/list

{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%FT%TZ) against $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
  echo "tests: $(ls $S/tests | tr '\n' ' ')"
} > $S/manifest
cat $S/manifest
tar -cf - -C $S tests bin manifest | xz -T0 -6 > .gpu/bundle.tar.xz
rm -rf $S
echo "==> .gpu/bundle.tar.xz: $(du -h .gpu/bundle.tar.xz | cut -f1); carry .gpu and data/mnist_5k.csv.gz"
