"""Executes notebooks through the registered "Rust (sgm)" kernel with a real Jupyter client
(nbclient), and fails when any cell fails.

evcxr reports a panic, or an error returned through `?`, on stderr and still counts the cell as
successful, so besides nbclient's own error handling this runner
  * requires every notebook to start with FIRST_CELL (`:preserve_vars_on_panic 0` turns a panic
    into a cell error),
  * counts any stderr output of a cell as a failure (evcxr prints a returned error there, as
    its bare message; it does so from a background thread that can lose the race with the end
    of the cell, so an error returned through `?` in a cell without a figure is caught most of
    the time, not always),
  * requires every cell tagged "figure" to have produced an image/png output.
Executed notebooks (.ipynb), HTML pages with the figures, and the figures as PNG files
(figures/NAME-N.png) land in the output folder, with a report.json of timings.

Usage: python kernel-setup/notebook_runner.py [--out DIR] [--timeout SECONDS] NOTEBOOK...
"""
import argparse
import json
import pathlib
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

KERNEL_NAME = "sgm"
# The first code cell of every notebook: what it depends on, and panics as cell errors.
FIRST_CELL = """:preserve_vars_on_panic 0
:dep sgm = { path = "../crate" }"""

# What evcxr prints on stderr when a cell panics or returns an Err through `?`.
FAILURE_PATTERNS = [
    re.compile(r"panicked at"),
    re.compile(r"^Error: ", re.MULTILINE),
    re.compile(r"^error(\[E\d+\])?: ", re.MULTILINE),
    re.compile(r"Child process terminated"),
]


class NotebookFailure(Exception):
    """A notebook that did not run cleanly; the message names the notebook and the cell."""


def _cell_label(nb, index):
    source = nb.cells[index].source.strip().splitlines()
    first = source[0] if source else ""
    return f"cell {index + 1} ({first[:60]!r})"


def check_outputs(nb, path):
    """Raises NotebookFailure for a cell whose stderr shows a failure, or a figure cell without
    a PNG."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        # evcxr prints an error returned through `?` as its bare message on stderr, and a panic's
        # message there too; the library itself never writes there, so any stderr text is a
        # failure.
        text = "".join(
            "".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"
        )
        summary = ""
        if text.strip():
            match = next((m for m in (p.search(text) for p in FAILURE_PATTERNS) if m), None)
            lines = [l.strip() for l in (text[match.start():] if match else text).splitlines() if l.strip()]
            # A panic's message is on the line after "... panicked at FILE:LINE:".
            summary = " ".join(lines[:2]) if "panicked at" in lines[0] else lines[0]
        errors = [o for o in outputs if o.get("output_type") == "error"]
        if errors:
            detail = f" ({summary})" if summary else ""
            raise NotebookFailure(
                f"{path}: {_cell_label(nb, i)} raised {errors[0].get('ename')}: {errors[0].get('evalue')}{detail}"
            )
        if summary:
            raise NotebookFailure(f"{path}: {_cell_label(nb, i)} failed: {summary}")
        if "figure" in cell.get("metadata", {}).get("tags", []):
            if not any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
                raise NotebookFailure(f"{path}: {_cell_label(nb, i)} is tagged 'figure' but showed no image/png")


def check_first_cell(nb, path):
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].source.strip() != FIRST_CELL:
        raise NotebookFailure(f"{path}: the first code cell must be exactly:\n{FIRST_CELL}")


def run_notebook(path, out_dir, timeout):
    """Executes one notebook; writes NAME.ipynb and NAME.html into out_dir. Returns seconds."""
    path = pathlib.Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    check_first_cell(nb, path)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        allow_errors=False,
        record_timing=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.monotonic()
    error = None
    try:
        client.execute()
    except CellTimeoutError as e:
        error = NotebookFailure(f"{path}: a cell ran past {timeout}s: {str(e).splitlines()[-1] if str(e) else ''}")
    except DeadKernelError as e:
        error = NotebookFailure(f"{path}: the kernel died: {e}")
    except CellExecutionError as e:
        error = NotebookFailure(f"{path}: a cell failed: {e.ename}: {e.evalue}")
    seconds = time.monotonic() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    # The executed notebook is written even when it failed, to show where.
    nbformat.write(nb, out_dir / path.name)
    # A labelled failure (which cell, what it said) when the outputs show one.
    check_outputs(nb, path)
    if error is not None:
        raise error
    write_html(nb, out_dir / (path.stem + ".html"))
    save_figures(nb, out_dir / "figures", path.stem)
    return seconds


def save_figures(nb, folder, stem):
    """Writes the PNG of every figure cell as STEM-N.png (N counts figures from 1)."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = out.get("data", {}).get("image/png")
            if png:
                count += 1
                (folder / f"{stem}-{count}.png").write_bytes(base64.b64decode(png))


def write_html(nb, target):
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--out", default="output", help="folder for executed notebooks and HTML")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    report = {}
    for nb_path in args.notebooks:
        print(f"==> executing {nb_path}", flush=True)
        try:
            seconds = run_notebook(nb_path, out_dir, args.timeout)
        except (NotebookFailure, FileNotFoundError, nbformat.reader.NotJSONError) as e:
            print(f"notebook failed: {e}", file=sys.stderr)
            return 1
        report[pathlib.Path(nb_path).name] = {"seconds": round(seconds, 1)}
        print(f"    ok in {seconds:.0f}s -> {out_dir / pathlib.Path(nb_path).name}", flush=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
