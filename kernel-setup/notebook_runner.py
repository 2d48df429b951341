"""Executes notebooks through the registered "Rust (sgm)" kernel with a real Jupyter client
(nbclient), cell by cell, and fails on the first cell that fails.

How a failing cell is recognised, for each way a Rust cell can fail under evcxr 0.22:
  * compile error, a crash (abort, `std::process::exit`, a signal) or a kernel death: evcxr
    answers the cell with an `error` output (a crashed child is restarted with no variables);
  * an error returned through `?`, or a panic: evcxr counts these cells as successful and
    prints their message on stderr from a background thread that can lose the race with the
    end of the cell. Every notebook's first cell therefore calls
    `sgm::notebook::report_failed_cells()`, which relays the cell process's output and turns
    both into a display output of MIME type ERROR_MIME, sent before the cell's reply
    (crate/src/notebook.rs explains why that is deterministic). The runner reads that output.
For the project's own notebooks (`strict`), any stderr text also fails the cell (the library
never writes there), every cell tagged "figure" must have produced an image/png, and every
cell tagged "animation" an HTML image holding a GIF.

Executed notebooks (.ipynb), HTML pages with the figures, the figures as PNG files
(figures/NAME-N.png) and report.json with timings land in the output folder. The kernel runs
with SGM_OUTPUT set to that folder, so a notebook's checkpoints and figures go there too.

Usage: python kernel-setup/notebook_runner.py [--out DIR] [--timeout SECONDS] [--keep-going] NOTEBOOK...
"""
import argparse
import contextlib
import json
import os
import pathlib
import re
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

KERNEL_NAME = "sgm"
ERROR_MIME = "application/vnd.sgm.cell-error+json"
# The first code cell of every notebook: the crate, and failed cells reported in their outputs.
FIRST_CELL = """:dep sgm = { path = "../crate" }
sgm::notebook::report_failed_cells()?;"""
# The homework notebooks (notebooks/homework/{source,release}/) depend on the student's kit
# crate instead, which re-exports the same relay.
HOMEWORK_FIRST_CELL = """:dep sgm_homework = { path = "../../../crate/homework" }
sgm_homework::report_failed_cells()?;"""

# Where a failure's message starts in stderr or an error's text.
FAILURE_PATTERNS = [
    re.compile(r"panicked at"),
    re.compile(r"^Error: ", re.MULTILINE),
    re.compile(r"^error(\[E\d+\])?: ", re.MULTILINE),
    re.compile(r"Child process terminated|Subprocess terminated"),
]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookFailure(Exception):
    """A notebook that did not run cleanly; the message names the notebook and the cell."""


def cell_label(nb, index):
    source = nb.cells[index].source.strip().splitlines()
    first = source[0] if source else ""
    return f"cell {index + 1} ({first[:60]!r})"


def summarise(text):
    """One line from a failure's text: a panic's message, an error's first line."""
    text = ANSI.sub("", text)
    match = next((m for m in (p.search(text) for p in FAILURE_PATTERNS) if m), None)
    lines = [l.strip() for l in (text[match.start():] if match else text).splitlines() if l.strip()]
    if not lines:
        return ""
    # A panic's message is on the line after "... panicked at FILE:LINE:".
    return " ".join(lines[:2]) if "panicked at" in lines[0] else lines[0]


def cell_failure(cell, strict=True):
    """Why a code cell failed, as (kind, message), or None when it did not."""
    outputs = cell.get("outputs", [])
    for out in outputs:
        if out.get("output_type") == "error":
            # evcxr: a compile error's evalue is the compiler's message (its code is in the
            # traceback's first line), a crash's says how the cell process ended.
            first = ANSI.sub("", (out.get("traceback") or [""])[0]).strip()
            code = re.match(r"\[(E\d+)\]", first)
            message = summarise(out.get("evalue", "")) or out.get("ename", "error")
            return ("error", f"error[{code.group(1)}]: {message}" if code else message)
    for out in outputs:
        data = out.get("data", {})
        if ERROR_MIME in data:
            record = error_record(data[ERROR_MIME])
            message = record["message"]
            return (record["kind"], summarise(message) or message or record["kind"])
    if strict:
        stderr = "".join(
            "".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"
        )
        if stderr.strip():
            return ("stderr", summarise(stderr))
        if "figure" in cell.get("metadata", {}).get("tags", []):
            if not any("image/png" in o.get("data", {}) for o in outputs):
                return ("figure", "tagged 'figure' but showed no image/png")
        if "animation" in cell.get("metadata", {}).get("tags", []):
            html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
            if "data:image/gif;base64," not in html:
                return ("animation", "tagged 'animation' but showed no GIF (text/html with an image/gif data URI)")
    return None


def check_first_cell(nb, path):
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].source.strip() not in (FIRST_CELL, HOMEWORK_FIRST_CELL):
        raise NotebookFailure(
            f"{path}: the first code cell must be exactly:\n{FIRST_CELL}\n(or, in a homework notebook:\n{HOMEWORK_FIRST_CELL})"
        )


@contextlib.contextmanager
def environment(values):
    """Sets the environment variables in `values` for the block, then restores them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def error_record(record):
    """An ERROR_MIME output's record as a dict with a string "kind" and "message". A cell's
    outputs are the notebook's own (a student's, for the grader), so a record that is not such
    a JSON object still reads as a failure, never as an exception in the runner."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            record = None
    if not isinstance(record, dict):
        return {"kind": "error", "message": "malformed failure output"}
    return {"kind": str(record.get("kind", "error")), "message": str(record.get("message", ""))}


def relay_message(cell):
    """The full stderr text of a cell whose failure the kernel's relay reported (the message of
    its ERROR_MIME output), or None."""
    for out in cell.get("outputs", []):
        record = out.get("data", {}).get(ERROR_MIME)
        if record is not None:
            return error_record(record)["message"]
    return None


def reclaim_stragglers(previous, cell):
    """Moves back to `previous` the stderr outputs at the start of `cell` that are the last lines
    of `previous`'s reported failure. evcxr forwards a cell's stderr from a thread of its own,
    which under load can send a panic's last backtrace lines after the cell has ended: they then
    arrive as the next cell's output, and a strict run would fail that cell for them. The relay's
    message holds the failed cell's whole stderr, so a run of leading stderr outputs whose lines
    are exactly that message's last lines is the failed cell's, not this one's. Returns how many
    outputs moved."""
    message = relay_message(previous) if previous is not None else None
    if not message:
        return 0
    tail = [l.rstrip() for l in ANSI.sub("", message).rstrip().splitlines()]
    outputs = cell.get("outputs", [])
    lines, best = [], 0
    for count, out in enumerate(outputs, start=1):
        if out.get("output_type") != "stream" or out.get("name") != "stderr":
            break
        for line in ANSI.sub("", "".join(out.get("text", ""))).splitlines():
            if line.strip() or lines:  # blank lines before the first text are not compared
                lines.append(line.rstrip())
        if lines and len(lines) <= len(tail) and tail[-len(lines):] == lines:
            best = count
    if best:
        previous.setdefault("outputs", []).extend(outputs[:best])
        del outputs[:best]
    return best


# Run after a notebook's last cell, never saved: evcxr forwards a cell's output from a thread of
# its own, and a line that reaches Jupyter after its cell has ended comes as the next execution's
# output (see reclaim_stragglers). The last cell has no next one, so its late lines were lost
# (seen once in CI: notebook 00's last printed line, under load). This cell prints nothing and
# runs long enough for the relay to catch up; whatever output it receives is the last cell's.
FLUSH_CELL = "std::thread::sleep(std::time::Duration::from_millis(200));"


def take_late_output(last, flush):
    """Moves the stream outputs that `flush` (FLUSH_CELL, run after `last`) received to the end of
    `last`'s outputs. Returns how many moved."""
    late = [out for out in flush.get("outputs", []) if out.get("output_type") == "stream"]
    last.setdefault("outputs", []).extend(late)
    return len(late)


def flush_late_output(client, nb, last):
    """Executes FLUSH_CELL in `client`'s kernel (after `last`, the last code cell it ran) without
    keeping it in `nb`, and moves the stream output it received to `last` (take_late_output).
    Returns how many outputs moved, or None when the flush cell itself failed to run."""
    flush = nbformat.v4.new_code_cell(FLUSH_CELL)
    nb.cells.append(flush)  # nbclient writes the executed cell back at its index
    try:
        client.execute_cell(flush, len(nb.cells) - 1, store_history=False)
    except (CellExecutionError, CellTimeoutError, DeadKernelError):
        return None
    finally:
        nb.cells.pop()
    return take_late_output(last, flush)


def execute(nb, cwd, timeout, keep_going=False, strict=True, env=None):
    """Executes `nb` in place, cell by cell, in one kernel. Returns the failures as a list of
    {"cell": index, "label", "kind", "message"}; without keep_going it stops at the first."""
    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    failures = []
    previous, last = None, None  # the last code cell executed, and its index

    def record(index, failure):
        kind, message = failure
        failures.append({"cell": index, "label": cell_label(nb, index), "kind": kind, "message": message})

    with environment(env or {}), client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
                reclaim_stragglers(previous, cell)
                failure = cell_failure(cell, strict)
            except CellTimeoutError:
                failure = ("timeout", f"ran past {timeout}s")
            except DeadKernelError as e:
                failure = ("dead", f"the kernel died: {e}")
            except CellExecutionError as e:
                failure = ("error", f"{e.ename}: {e.evalue}")
            previous, last = cell, index
            if failure:
                record(index, failure)
                if not keep_going or failure[0] in ("timeout", "dead"):
                    break
        if previous is not None and not (failures and failures[-1]["kind"] in ("timeout", "dead")):
            if flush_late_output(client, nb, previous):
                # Late lines count as the cell's own: a strict run fails it for late stderr
                # as it would have for the same lines on time.
                failure = None if failures and failures[-1]["cell"] == last else cell_failure(previous, strict)
                if failure:
                    record(last, failure)
    return failures


def run_notebook(path, out_dir, timeout, keep_going=False):
    """Executes one notebook; writes NAME.ipynb (always) and NAME.html into out_dir. Returns
    (seconds, failures)."""
    path = pathlib.Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    check_first_cell(nb, path)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    failures = execute(nb, path.parent, timeout, keep_going, env={"SGM_OUTPUT": str(out_dir.resolve())})
    seconds = time.monotonic() - start
    # The executed notebook is written even when it failed, to show where.
    nbformat.write(nb, out_dir / path.name)
    if not failures:
        write_html(nb, out_dir / (path.stem + ".html"))
        save_figures(nb, out_dir / "figures", path.stem)
    return seconds, failures


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
    """The HTML page, with MathJax copied beside it so that formulas render offline
    (kernel-setup/html_pages.py)."""
    here = str(pathlib.Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from html_pages import write_html as write_page

    write_page(nb, target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--out", default="output", help="folder for executed notebooks and HTML")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument(
        "--keep-going", action="store_true", help="run every cell and report every failing one (probes)"
    )
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    report = {}
    status = 0
    for nb_path in args.notebooks:
        print(f"==> executing {nb_path}", flush=True)
        try:
            seconds, failures = run_notebook(nb_path, out_dir, args.timeout, args.keep_going)
        except (NotebookFailure, FileNotFoundError, nbformat.reader.NotJSONError) as e:
            print(f"notebook failed: {e}", file=sys.stderr)
            return 1
        name = pathlib.Path(nb_path).name
        report[name] = {"seconds": round(seconds, 1), "failures": failures}
        if failures:
            status = 1
            first = failures[0]
            print(
                f"notebook failed: {nb_path}: {first['label']} failed ({first['kind']}): {first['message']}",
                file=sys.stderr,
            )
            if not args.keep_going:
                break
        else:
            print(f"    ok in {seconds:.0f}s -> {out_dir / name}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
