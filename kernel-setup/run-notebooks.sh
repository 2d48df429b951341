#!/usr/bin/env bash
# The main job: set-up (idempotent), then execute every notebook headless through the
# "Rust (sgm)" kernel into output/: executed notebooks, HTML pages with the figures, the figures
# as PNG files (output/figures/) and timings (output/report.json).
# SGM_BUDGET=ci shrinks the notebooks' budgets; unset runs the seeds' sizes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash kernel-setup/setup.sh
echo "==> executing notebooks (budget: ${SGM_BUDGET:-full}) into output/"
exec .venv/bin/python kernel-setup/notebook_runner.py --out output notebooks/[0-9]*.ipynb
