"""Runs the notebooks' first cell in the registered kernel, so that the kernel's build folder
holds a compiled tch and sgm before a user opens a notebook (the first build takes minutes)."""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernel-setup"))
from notebook_runner import FIRST_CELL  # noqa: E402

nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell(FIRST_CELL), nbformat.v4.new_code_cell('sgm::device::describe(sgm::device())')]
client = NotebookClient(nb, kernel_name="sgm", timeout=1800, resources={"metadata": {"path": str(ROOT / "notebooks")}})
client.execute()
out = nb.cells[1].outputs
print("    kernel answers:", out[0].get("data", {}).get("text/plain", out) if out else "(nothing)")
