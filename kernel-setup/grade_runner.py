"""Executes one homework submission for `sgm grade`, in its own kernel, folder and sandbox.

`sgm grade` (crate/cli/src/grade.rs) builds the notebook to run (the student's answer cells,
the source's locked and graded cells, each graded cell followed by a line that reports a secret)
and scores what this script writes. This script only executes, cell by cell:

  * the kernel is the registered evcxr kernel, started inside bubblewrap (`bwrap`): the
    submission's folder is its working directory and the only place it can write besides its
    own copy of the build folder; the crate sources, the data, the Python environment and the
    toolchains are mounted read-only; the assignment source, the hidden checks, the grader's
    files and other submissions are not mounted at all. It runs without capabilities, in its
    own PID, IPC, UTS and network namespaces (no network: the client reaches the kernel through
    Unix sockets, see sandbox_bridge.py), with a limit on each process's data segment (memory)
    and the out-of-memory killer's highest bias (OOM_SCORE_ADJ);
  * all the submission's processes together live in a cgroup of their own (Cgroup): at most
    --processes processes and threads and --memory bytes; a cell after which something keeps the
    process limit full (a fork bomb) fails, and the kernel restarts with them killed (should the
    limit fill only during a later cell, the replay finds the cell that started it); with the
    cpu controller, submissions graded side by side get equal shares of the cores;
  * a cell that fails (compile error, `?` error, panic: read from its outputs as
    notebook_runner.cell_failure does) is recorded and the next cell runs;
  * a cell that runs past the per-cell limit, or kills its process (abort, exit, a crash, the
    memory limit), is recorded with the cause; the kernel is then started afresh and the cells
    that had succeeded are run again (checks excepted) so that later, independent tasks are
    still graded; a task whose code was in the failed cell fails through its own checks;
  * past the submission's time limit the remaining cells are skipped, each with the reason;
  * of one cell it keeps 1 MiB of printed text, 16 MiB of rich output and 1 MiB of errors, of
    the submission 16, 64 and 16 MiB, failure and grade records always (BoundedClient), so a
    print loop or a flood of compile errors cannot fill the grader's memory or disk;
  * a submission that writes more than --disk into its folders (its own, its build copy, its
    kernel's connection folder) has its kernel stopped and what it wrote removed (DiskWatch),
    then the kernel restarts as after a crash; in the sandbox no file may pass --disk, /tmp
    and /dev/shm are small in-memory folders and /dev is read-only;
  * with --no-sandbox (trusted notebooks) the kernel works in a run folder of its own
    (RUNS_DIR), watched the same way and moved into the submission's folder at the end.

Usage:
  grade_runner.py run --notebook RUN.ipynb --executed OUT.ipynb --outcomes OUT.json --work DIR
                      --build DIR [--cell-timeout S] [--timeout S] [--memory BYTES] [--disk BYTES]
                      [--processes N] [--no-cgroup] [--no-sandbox]
  grade_runner.py warm            # builds the grading build template (the kit, tch, sgm) once
  grade_runner.py cgroup-check    # whether a submission's cgroup can be made here
  grade_runner.py html IN.ipynb OUT.html
"""
import argparse
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernel-setup"))
from notebook_runner import (ERROR_MIME, HOMEWORK_FIRST_CELL, cell_failure, environment,  # noqa: E402
                             flush_late_output, reclaim_stragglers)

KERNEL_JSON = ROOT / ".venv/share/jupyter/kernels/sgm/kernel.json"
EVCXR = ROOT / ".tools/evcxr/bin/evcxr_jupyter"
# Where the homework notebooks live: the submission's folder is mounted here in the sandbox,
# so that the first cell's `:dep ... path = "../../../crate/homework"` resolves.
NOTEBOOK_DIR = ROOT / "notebooks/homework/release"
# Without the sandbox nothing can be mounted there: each kernel works in a folder of its own at
# the same depth below the repository instead (`<grader's pid>-<ns>`), whose files are moved
# into the submission's folder when it ends, so that neither the notebooks' place nor another
# submission's kernel sees them.
RUNS_DIR = ROOT / ".tools/grade-runs"
TEMPLATE = ROOT / ".tools/evcxr-build/grade-template"
OUT_OF_MEMORY = re.compile(r"memory allocation of \d+ bytes failed")
BRIDGE = ROOT / "kernel-setup/sandbox_bridge.py"
# Sizes of the sandbox's in-memory folders: /tmp holds rustc's and the linker's temporary
# files; /dev/shm, POSIX shared memory (the homework tests pass with 64 MiB of it).
TMP_SIZE = 1 << 30
SHM_SIZE = 64 << 20
GRADE_MIME = "application/vnd.sgm.grade+json"  # sgm::assignment::GRADE_MIME
# The most tasks Linux can count (PID_MAX_LIMIT on 64-bit machines), and the fewest a kernel
# gets: grading homework 5 peaks at 46 processes and threads on 2 cores, more where rustc and
# the thread pools see more cores (`sgm grade --processes` takes the same range).
PID_MAX_LIMIT = 1 << 22
MIN_PROCESSES = 64
CRASH = re.compile(r"Subprocess terminated|Child process terminated|kernel died", re.I)


# The out-of-memory killer's bias for every process of a submission (the most, 1000): when the
# machine runs short of memory (without a cgroup: --no-cgroup, --no-sandbox; or several
# submissions' groups together), a submission's process goes before the grader, the Jupyter
# client or anything else on the machine, whatever their sizes.
OOM_SCORE_ADJ = 1000


def private_entries(roots):
    """(path, is a folder) of every file and folder below `roots` that others may not read (no
    o+r), links aside; a private folder is one entry. /etc/shadow, /etc/ssl/private and the
    like, and a cargo registry token (credentials.toml) where it is kept private."""
    found = []
    for root in roots:
        for top, dirs, files in os.walk(root):
            for name in list(dirs) + files:
                path = os.path.join(top, name)
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    continue
                if stat.S_ISLNK(mode) or mode & stat.S_IROTH:
                    continue
                found.append((pathlib.Path(path), stat.S_ISDIR(mode)))
                if name in dirs:
                    dirs.remove(name)
            if pathlib.Path(top) == pathlib.Path(root) and root.name == ".cargo":
                # Below ~/.cargo only its top level and its config: the registry is large.
                dirs[:] = []
    # Always, whatever its mode: what cargo keeps a registry token in.
    for token in (pathlib.Path.home() / ".cargo/credentials.toml", pathlib.Path.home() / ".cargo/credentials"):
        if token.exists() and (token, False) not in found:
            found.append((token, False))
    return found


def sandbox_argv(work, build, runtime_dir, memory, disk):
    """bwrap's command line around evcxr_jupyter (see the module's documentation): the kernel
    starts behind sandbox_bridge.py, which reads the client's connection file `{connection_file}`;
    `memory` and `disk` are the data-segment and file-size limits in bytes."""
    home = pathlib.Path.home()
    argv = ["bwrap", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try"]
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        p = pathlib.Path(top)
        if p.is_symlink():
            argv += ["--symlink", os.readlink(top), top]
        elif p.exists():
            argv += ["--ro-bind", top, top]
    # /tmp and /dev/shm live in memory, which the data-segment limit does not count: they have
    # sizes of their own, and /dev (bubblewrap's, in memory too) is read-only.
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--size", str(TMP_SIZE), "--tmpfs", "/tmp"]
    for ro in (
        ROOT / "crate",
        ROOT / "Cargo.toml",
        ROOT / "data",
        ROOT / ".venv",
        ROOT / ".tools/evcxr",
        home / ".cargo",
        home / ".rustup",
        BRIDGE,
        # The interpreter that runs the bridge (the venv's python links into it; stdlib only).
        pathlib.Path(sys.base_prefix),
    ):
        if ro.exists():
            argv += ["--ro-bind", str(ro), str(ro)]
    # The kernel runs as root (without capabilities): what only root may read in the trees it
    # sees (/etc/shadow, private keys, a cargo registry token) is covered, so that no cell can
    # print it into its feedback. After the binds above, which would otherwise mount the real
    # files back over the covers.
    for private, is_dir in private_entries([pathlib.Path("/etc"), home / ".cargo"]):
        if is_dir:
            argv += ["--size", "4096", "--tmpfs", str(private), "--remount-ro", str(private)]
        else:
            argv += ["--ro-bind", "/dev/null", str(private)]
    # The crate's build output and caches are not the sandbox's business.
    argv += ["--size", str(1 << 20), "--tmpfs", str(ROOT / "crate/target")] if (ROOT / "crate/target").exists() else []
    argv += ["--bind", str(build), str(TEMPLATE), "--bind", str(work), str(NOTEBOOK_DIR)]
    # The connection file and the Unix sockets of the kernel's channels (written by the bridge).
    argv += ["--bind", str(runtime_dir), str(runtime_dir)]
    argv += ["--chdir", str(NOTEBOOK_DIR), "--setenv", "HOME", "/tmp"]
    # The toolchains stay where rustup installed them (read-only), whatever HOME says.
    argv += ["--setenv", "RUSTUP_HOME", os.environ.get("RUSTUP_HOME", str(home / ".rustup"))]
    argv += ["--setenv", "CARGO_HOME", os.environ.get("CARGO_HOME", str(home / ".cargo"))]
    argv += ["--", sys.executable, str(BRIDGE), "{connection_file}", "--"]
    # No file larger than the disk limit (DiskWatch polls the total).
    argv += ["prlimit", f"--data={memory}", f"--fsize={disk}", "--"]
    return argv


def parse_bytes(text, option="--memory"):
    """'8G', '512M', '1048576' -> bytes (prlimit itself takes plain numbers only)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not match:
        raise SystemExit(f"grade_runner: {option} {text!r}: expected a size such as 8G or 512M")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    value = float(match.group(1)) * scale
    if not 1 <= value <= 2**50:
        raise SystemExit(f"grade_runner: {option} {text!r}: expected a size from 1 byte to 1 PiB")
    return int(value)


def kernel_spec(spec_dir, work, build, runtime_dir, memory, disk, sandbox, budget, cgroup=None, place=NOTEBOOK_DIR):
    """Writes a kernelspec `sgm-grade` into spec_dir/kernels/ and returns its name; the kernel
    starts inside `cgroup` (a Cgroup) when there is one. `place` is its working folder as it
    sees it (the notebooks' place in the sandbox, a run folder without it)."""
    base = json.loads(KERNEL_JSON.read_text())
    env = dict(base.get("env", {}))
    env.update(
        {
            "EVCXR_TMPDIR": str(TEMPLATE if sandbox else build),
            "SGM_BUDGET": budget,
            "SGM_OUTPUT": str(place / "output"),
            "SGM_CACHE": str(place / ".cache"),
            "CARGO_NET_OFFLINE": "true",
            # The notebook's last cell (sgm_homework::validate) reads the saved notebook in a
            # student's Jupyter; in grading it says that the grader checks the submission itself.
            "SGM_GRADING": "1",
            # Kernels graded side by side (--jobs) share the cores: OpenMP threads that spin while
            # they wait for work take them from each other (measured: sampling 1.5x, training
            # 2.7x faster with passive waiting on a loaded 2-core machine).
            "OMP_WAIT_POLICY": "PASSIVE",
        }
    )
    if sandbox:
        argv = sandbox_argv(work, build, runtime_dir, memory, disk) + [str(EVCXR), "--control_file", "{kernel_file}"]
        argv = (cgroup.argv() if cgroup is not None else []) + argv
    else:
        argv = [str(EVCXR), "--control_file", "{connection_file}"]
    # Set before the sandbox drops its capabilities, so that where the grader holds
    # CAP_SYS_RESOURCE (root on a machine of its own) none of the submission's processes can
    # lower it again.
    argv = ["choom", "-n", str(OOM_SCORE_ADJ), "--"] + argv
    spec = {"argv": argv, "display_name": "Rust (sgm, grading)", "language": "rust", "env": env,
            "interrupt_mode": "message"}
    folder = pathlib.Path(spec_dir) / "kernels" / "sgm-grade"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return "sgm-grade"


# What the grader keeps of a submission's output. A student's endless print loop sent 940 MB
# to the grader in a 30-second cell: the grader's process grew to 6.6 GB and wrote the text
# three times (the executed notebook, the feedback notebook and its HTML); the default
# 300-second limit would have filled the machine's memory. The limits hold per execution of a
# cell and for the whole submission (any number of cells, across kernel restarts).
STREAM_LIMIT = 1 << 20  # characters of printed text (stdout and stderr together) per cell
STREAM_TOTAL = 16 << 20  # the same for the submission
RICH_LIMIT = 16 << 20  # characters of rich output data per cell (a figure is tens of kB)
RICH_TOTAL = 64 << 20  # the same for the submission
# Characters of error outputs (evcxr's compile errors, one output each, every one quoting its
# lines: 3,000 type errors in a 400 kB cell made 34 MB) per cell and per submission. A cell's
# first error is always kept (cut to RECORD_LIMIT, or ERROR_FLOOR once the submission's total
# is spent), so the failure it records stays readable.
ERROR_LIMIT = 1 << 20
ERROR_TOTAL = 16 << 20
ERROR_FLOOR = 1 << 10
# Failure and grade records decide scores: one of at most this many characters is always kept
# and not counted (sgm::notebook's failure records are at most about 16 kB, a grade record a few
# dozen characters); a larger grade record cannot be genuine.
RECORD_LIMIT = 64 << 10
# What one rich output counts besides its data (its JSON and the objects that hold it).
OUTPUT_COST = 1 << 10


def entry_size(value):
    """Characters of one MIME entry of a rich output, as the JSON that carries it spells them."""
    return len(value) if isinstance(value, str) else len(json.dumps(value))


class OutputBudget:
    """What is left of the submission's output limits, shared by the kernels of one run."""

    def __init__(self):
        self.printed = {}  # execution (its msg_id) -> characters of text kept, None once cut
        self.shown = {}  # execution -> characters of rich data kept
        self.printed_total = 0
        self.shown_total = 0
        self.oom_kept = set()  # executions whose dropped text held the out-of-memory line
        self.errors = {}  # execution -> characters of error outputs kept
        self.errors_total = 0
        self.errors_dropped = set()  # executions whose later errors were dropped (noted once)
        self.outputs_dropped = set()  # executions whose later rich outputs were dropped (noted once)


# What the runner's log keeps of one kernel's own output (evcxr's messages), the rest read and
# dropped so that the kernel never waits on a full pipe; and of one line of it.
KERNEL_LOG_LIMIT = 1 << 20
LINE_LIMIT = 4 << 10


def relay_kernel_log(fd):
    """Copies what a kernel writes to its stdout and stderr (the pipe `fd`) to the runner's
    stderr, each line marked `kernel:` and cut to LINE_LIMIT characters, until the kernel and
    its processes are gone; past KERNEL_LOG_LIMIT characters written one line says the rest was
    dropped."""
    written, full = 0, False
    line, cut = b"", False  # the line being read; whether it is past LINE_LIMIT

    def emit(text):
        nonlocal written, full
        text = "kernel: " + text.decode(errors="replace") + (" [cut]" if cut else "") + "\n"
        if written + len(text) > KERNEL_LOG_LIMIT:
            full = True
            sys.stderr.write(f"[grade_runner: the kernel's output past {KERNEL_LOG_LIMIT:,} characters was dropped]\n")
        else:
            sys.stderr.write(text)
            written += len(text)

    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(64 << 10):
            if full:
                continue
            *ended, rest = chunk.split(b"\n")
            for part in ended:
                if not full:
                    emit((line + part)[:LINE_LIMIT])
                line, cut = b"", False
            if len(line) + len(rest) > LINE_LIMIT:
                cut = True
            line = (line + rest)[:LINE_LIMIT]
            sys.stderr.flush()
    if line and not full:
        emit(line)
        sys.stderr.flush()


def note_once(outs, noted, parent, what, per_cell, per_submission):
    """Adds to `outs`, once per execution `parent` (recorded in the set `noted`), the line saying
    that further `what` past the grader's limits were dropped."""
    if parent in noted:
        return
    noted.add(parent)
    outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
        f"[sgm grade: further {what} past the grader's limit ({per_cell:,} characters a cell, "
        f"{per_submission:,} a submission) were dropped]\n")))


class BoundedClient(NotebookClient):
    """nbclient's client that keeps within `budget` (an OutputBudget): of one execution of a
    cell at most STREAM_LIMIT characters of printed text, then one line saying the rest was
    dropped (and the allocator's out-of-memory line should it come in the dropped part), and
    RICH_LIMIT characters of rich output data, entry by entry (MIME type by MIME type), an
    entry past the limit replaced by a line saying so; and STREAM_TOTAL and RICH_TOTAL for the
    whole submission. Failure and grade records up to RECORD_LIMIT are always kept; a larger
    failure record becomes a short one, so its cell still fails. Scores therefore stand; only
    the text kept of a flood is cut."""

    def __init__(self, *args, budget, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget

    def output(self, outs, msg, display_id, cell_index):
        parent = msg["parent_header"].get("msg_id")
        b = self.budget
        if msg["msg_type"] == "stream":
            text = msg["content"].get("text", "")
            kept = b.printed.get(parent, 0)
            if kept is not None:
                room = min(STREAM_LIMIT - kept, STREAM_TOTAL - b.printed_total)
                if len(text) <= room:
                    b.printed[parent] = kept + len(text)
                    b.printed_total += len(text)
                    return super().output(outs, msg, display_id, cell_index)
                b.printed[parent], b.printed_total = None, b.printed_total + max(room, 0)
                head = {**msg, "content": {**msg["content"], "text": text[:max(room, 0)]}}
                super().output(outs, head, display_id, cell_index)
                outs.append(nbformat.v4.new_output("stream", name=msg["content"].get("name", "stdout"), text=(
                    f"\n[sgm grade: printed output past the grader's limit ({STREAM_LIMIT:,} characters a cell, "
                    f"{STREAM_TOTAL:,} a submission) was dropped]\n")))
                text = text[max(room, 0):]
            # The dropped part may hold the allocator's last words, which name the memory limit.
            oom = OUT_OF_MEMORY.search(text)
            if oom and parent not in b.oom_kept:
                b.oom_kept.add(parent)
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=oom.group(0) + "\n"))
            return None
        if msg["msg_type"] == "error":
            return self.error_output(outs, msg, display_id, cell_index)
        out = super().output(outs, msg, display_id, cell_index)
        if out is None:
            return out
        # Output metadata is the kernel's to send and nobody's to trust (a submission's code can
        # send any message the kernel can): nbconvert writes an image's width and height into
        # the page unquoted. evcxr sends none.
        if "metadata" in out:
            out["metadata"] = nbformat.NotebookNode()
        if "data" not in out:
            return out
        # Each output costs OUTPUT_COST besides its data, and each entry its MIME type's name:
        # a flood of outputs with empty data, or of entries with made-up names, counts too.
        kept = b.shown.get(parent, 0)
        if kept + OUTPUT_COST > RICH_LIMIT or b.shown_total + OUTPUT_COST > RICH_TOTAL:
            if outs and outs[-1] is out:
                outs.pop()
            note_once(outs, b.outputs_dropped, parent, "outputs", RICH_LIMIT, RICH_TOTAL)
            return None
        kept += OUTPUT_COST
        b.shown_total += OUTPUT_COST
        for mime in list(out["data"]):
            size = len(mime) + entry_size(out["data"][mime])
            if mime in (ERROR_MIME, GRADE_MIME):
                if size <= RECORD_LIMIT:
                    continue
            elif kept + size <= RICH_LIMIT and b.shown_total + size <= RICH_TOTAL:
                kept += size
                b.shown_total += size
                continue
            note = (f"[sgm grade: a {mime} output of {size:,} characters was dropped: past the grader's limit "
                    f"({RICH_LIMIT:,} characters a cell, {RICH_TOTAL:,} a submission, {RECORD_LIMIT:,} a record)]")
            del out["data"][mime]
            out["data"]["text/plain"] = note
            if mime == ERROR_MIME:
                out["data"][ERROR_MIME] = {"kind": "error", "message": "the cell's failure output was too large: " + note}
        b.shown[parent] = kept
        return out

    async def async_start_new_kernel(self, **kwargs):
        """The kernel's own stdout and stderr (evcxr's messages, a crash's last words) reach the
        runner's log through a pipe (relay_kernel_log): were they the log file itself, the
        sandbox could open it through /proc/PID/fd and write the grader's log past every limit."""
        read_end, write_end = os.pipe()
        kwargs.setdefault("stdout", write_end)
        kwargs.setdefault("stderr", write_end)
        try:
            await super().async_start_new_kernel(**kwargs)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        threading.Thread(target=relay_kernel_log, args=(read_end,), daemon=True).start()

    start_new_kernel = run_sync(async_start_new_kernel)

    def _update_display_id(self, display_id, msg):
        """Ignored: evcxr never updates a display, and an update would replace an output's
        data past every limit above."""

    def handle_comm_msg(self, outs, msg, cell_index):
        """Ignored: evcxr opens no widgets' comms, and their state would be kept unbounded."""

    def error_output(self, outs, msg, display_id, cell_index):
        """An error output within ERROR_LIMIT and ERROR_TOTAL; the cell's first always, cut to
        RECORD_LIMIT characters (to ERROR_FLOOR once the submission's total is spent); past
        them one line says that the rest was dropped."""
        parent = msg["parent_header"].get("msg_id")
        b = self.budget
        content = msg["content"]
        cap = RECORD_LIMIT if b.errors_total < ERROR_TOTAL else ERROR_FLOOR
        traceback = [str(line) for line in content.get("traceback", [])]
        evalue = str(content.get("evalue", ""))[:cap]
        size = len(evalue) + sum(map(len, traceback))
        if size > cap:
            kept_lines, room = [], cap - len(evalue)
            for line in traceback:
                if len(line) > room:
                    kept_lines.append(line[:max(room, 0)] + " [sgm grade: the rest of this error was cut]")
                    break
                kept_lines.append(line)
                room -= len(line)
            traceback, size = kept_lines, cap
        kept = b.errors.get(parent)
        if kept is None or (kept + size <= ERROR_LIMIT and b.errors_total + size <= ERROR_TOTAL):
            b.errors[parent] = (kept or 0) + size
            b.errors_total += size
            bounded = {**msg, "content": {**content, "evalue": evalue, "traceback": traceback}}
            return super().output(outs, bounded, display_id, cell_index)
        note_once(outs, b.errors_dropped, parent, "errors", ERROR_LIMIT, ERROR_TOTAL)
        return None


# What an entry of the file system costs at the least (an inode and a block): empty files and
# folders count, so that a million of them reach the limit too.
ENTRY_COST = 4096


def disk_usage(folders):
    """Bytes the entries below `folders` take on disk (not following links), each at least
    ENTRY_COST. A folder the submission made unreadable is made readable again (it is the
    grader's own user's) and counted."""
    total = 0
    stack = [str(f) for f in folders]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except PermissionError:
            try:
                os.chmod(folder, 0o700)
                entries = list(os.scandir(folder))
            except OSError:
                continue
        except OSError:
            continue  # removed while we looked
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += max(st.st_blocks * 512, ENTRY_COST)
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


def descendants(pid):
    """`pid` and every process below it (Linux's /proc), as far as they can be read."""
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat_line = f.read()
            # `pid (comm) state ppid …`: the command may hold spaces and parentheses.
            parent = int(stat_line.rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(children.get(p, []))
    return found


def deleted_but_held(pids, devices):
    """Bytes of the files on `devices` (st_dev) that `pids` hold open or mapped after they were
    removed: a removed file keeps its blocks until the last process lets go, and the folders
    no longer show it. Each file once."""
    seen, total = set(), 0
    for pid in pids:
        for kind in ("fd", "map_files"):
            folder = f"/proc/{pid}/{kind}"
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            for name in entries:
                path = f"{folder}/{name}"
                try:
                    if not os.readlink(path).endswith(" (deleted)"):
                        continue
                    st = os.stat(path)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if stat.S_ISREG(st.st_mode) and st.st_dev in devices and key not in seen:
                    seen.add(key)
                    total += st.st_blocks * 512
    return total


def remove_tree(path):
    """Removes `path` whatever its permissions say (the submission may have changed them), a
    few times over should the dying sandbox still add to it. Returns whether it is gone."""
    def writable_then_retry(function, name, _exc_info):
        try:
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
            function(name)
        except OSError:
            pass

    for _ in range(5):
        shutil.rmtree(path, onerror=writable_then_retry)
        if not os.path.lexists(path):
            return True
        time.sleep(0.5)
    return False


class DiskWatch:
    """Stops a kernel whose submission writes more than `limit` bytes into the folders it can
    write that are on the machine's disk (its own folder, its copy of the build folder, the
    folder of the kernel's connection files), counted from their size before the first cell
    (disk_usage). A thread polls them every `interval` seconds and kills the kernel's process
    group (bubblewrap, whose sandbox dies with it) when they pass it; the grader then removes
    what the submission wrote (run_cells' `reset`) before it restarts the kernel. What is
    written between two polls may go over the limit; a single file cannot (prlimit --fsize).
    Files removed but still held open or mapped by the kernel's processes count too, as long as
    they hold their blocks on one of these folders' file systems (deleted_but_held)."""

    def __init__(self, folders, limit, interval=1.0):
        self.folders, self.limit, self.interval = folders, limit, interval
        self.base = disk_usage(folders)
        self.devices = {os.stat(f).st_dev for f in folders if os.path.exists(f)}
        self.tripped = None  # bytes written when the kernel was stopped
        self._stop = threading.Event()
        self._thread = None

    def breach(self, written):
        """Records that the submission wrote `written` bytes, past the limit."""
        self.tripped = written

    def clear(self):
        """After the files were removed."""
        self.tripped = None

    def start(self, pid):
        self._stop.clear()

        def poll():
            while not self._stop.wait(self.interval):
                written = disk_usage(self.folders) - self.base
                written += deleted_but_held(descendants(pid), self.devices)
                if written > self.limit:
                    self.breach(written)
                    for kill in (os.killpg, os.kill):
                        try:
                            kill(pid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            continue
                        break
                    return

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def message(self):
        return (f"the submission wrote {self.tripped / 2**20:,.0f} MiB, past the disk limit of "
                f"{self.limit / 2**20:,.0f} MiB: the kernel was stopped and what it wrote removed")


# What a grader names its cgroups and run folders: `<pid>-<monotonic ns>`; run folders also
# have `.lock` files and, while reset() empties them, `.removed-<ns>` folders aside.
GRADER_ENTRY = re.compile(r"(\d{1,7})-\d+(\.lock|\.removed-\d+)?")


def left_by_dead_graders(parent):
    """The entries below `parent` named as a grader names them (GRADER_ENTRY) whose grader
    process is not on this machine (killed before it could remove its own)."""
    for entry in parent.glob("[0-9]*-*"):
        match = GRADER_ENTRY.fullmatch(entry.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            yield entry
        except (PermissionError, OverflowError):
            pass


def take_run_folder():
    """A new run folder (RUNS_DIR/<pid>-<ns>) and the descriptor of its lock file (<pid>-<ns>.lock,
    held while the grader runs), after removing the folders of graders that are gone: whose
    process is not on this machine and whose lock nobody holds (a grader on another machine that
    shares the repository holds its own)."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    by_base = {}
    for entry in left_by_dead_graders(RUNS_DIR):
        by_base.setdefault(entry.name.split(".")[0], []).append(entry)
    for base, entries in by_base.items():
        fd = held_lock(RUNS_DIR / f"{base}.lock", wait=False)
        if fd is None:
            continue  # held: its grader still runs (elsewhere)
        try:
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    remove_tree(entry)
            (RUNS_DIR / f"{base}.lock").unlink(missing_ok=True)
        finally:
            os.close(fd)
    base = f"{os.getpid()}-{time.monotonic_ns()}"
    held = held_lock(RUNS_DIR / f"{base}.lock", wait=True)
    folder = RUNS_DIR / base
    folder.mkdir()
    return folder, held


def held_lock(path, wait):
    """A descriptor holding an exclusive lock (flock) on the file at `path`, created if need
    be, or None where `wait` is false and another holds it. The lock is on the file the path
    names when it returns: should a clean-up have removed that file between its opening and its
    locking, it is opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def give_back_run_folder(folder, held, target):
    """Moves what the run folder holds into `target` (an entry whose name is taken there stays
    behind and goes with the folder), removes it and lets go of its lock; a failure is reported
    and left to the next grader's clean-up."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        for entry in list(folder.iterdir()):
            if os.path.lexists(target / entry.name):
                print(f"grade_runner: {target / entry.name} exists; the kernel's {entry.name} was not kept",
                      file=sys.stderr)
                continue
            shutil.move(str(entry), str(target / entry.name))
        remove_tree(folder)
    except OSError as e:
        print(f"grade_runner: moving the run folder {folder} into {target} failed: {e}", file=sys.stderr)
    finally:
        (RUNS_DIR / f"{folder.name}.lock").unlink(missing_ok=True)
        os.close(held)


class CgroupUnavailable(Exception):
    """No cgroup the grader may create for a submission (why, in one line)."""


class Cgroup:
    """All of one submission's processes together, in a control group of their own: at most
    `processes` tasks (processes and threads: the pids controller) and `memory` bytes (the
    memory controller: anonymous memory, page cache, what the in-memory folders hold). The
    data-segment limit (prlimit) bounds one process only: a submission that starts processes
    (a fork bomb, or children that each stay under it) would otherwise take the machine's
    process table and memory, and every other submission's with it. Where the cpu controller
    is there too, each submission's group has the same weight, so that of submissions graded
    side by side (--jobs) one that runs many threads takes no more than its share of the cores
    (the scheduler is otherwise fair between threads, not submissions).

    cgroup v1 (a `pids` and a `memory` hierarchy, as on the machine this is developed on) and
    cgroup v2 (one hierarchy with both controllers) are both handled; either needs the right to
    create groups (root). The kernel is started inside by `argv()`: a shell that writes its own
    PID into the groups and executes bubblewrap, so every process below it is counted."""

    # The counters that say a limit was reached: (controller, file, key) per version.
    V1 = {"pids": ("pids", "pids.max", "pids.events", "max", "pids.peak"),
          "memory": ("memory", "memory.limit_in_bytes", "memory.oom_control", "oom_kill", "memory.max_usage_in_bytes")}
    V2 = {"pids": ("", "pids.max", "pids.events", "max", "pids.peak"),
          "memory": ("", "memory.max", "memory.events", "oom_kill", "memory.peak")}

    # Controllers used where present: each group gets the default weight.
    OPTIONAL = ("cpu",)

    def __init__(self, folders, version, memory, processes):
        self.folders, self.version = folders, version  # {"pids": path, "memory": path[, "cpu": path]}
        self.memory, self.processes = memory, processes

    @classmethod
    def mounts(cls):
        """{controller: mount point} of cgroup v1, and the cgroup v2 mount point (or None)."""
        v1, v2 = {}, None
        for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            if fields[2] == "cgroup":
                for option in fields[3].split(","):
                    if option in cls.V1 or option in cls.OPTIONAL:
                        v1[option] = pathlib.Path(fields[1])
            elif fields[2] == "cgroup2" and v2 is None:
                v2 = pathlib.Path(fields[1])
        return v1, v2

    @classmethod
    def create(cls, name, memory, processes):
        """A new group `sgm-grade/<name>` with both limits set, or CgroupUnavailable."""
        v1, v2 = cls.mounts()
        try:
            if set(cls.V1) <= set(v1):
                folders = {c: v1[c] / "sgm-grade" / name for c in v1}
                version, table = 1, cls.V1
            elif v2 is not None and {"pids", "memory"} <= set((v2 / "cgroup.controllers").read_text().split()):
                available = set((v2 / "cgroup.controllers").read_text().split())
                used = [c for c in (*cls.V1, *cls.OPTIONAL) if c in available]
                enable = " ".join("+" + c for c in used)
                parent = v2 / "sgm-grade"
                (v2 / "cgroup.subtree_control").write_text(enable)
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text(enable)
                folders = {c: parent / name for c in used}
                version, table = 2, cls.V2
            else:
                raise CgroupUnavailable("neither cgroup v1's pids and memory hierarchies nor cgroup v2 with "
                                        "both controllers is mounted")
            made = []
            try:
                for folder in folders.values():
                    cls.remove_stale(folder.parent)
                    if not folder.exists():
                        folder.mkdir(parents=True)
                        made.append(folder)
                group = cls(folders, version, memory, processes)
                group.write("pids", table["pids"][1], str(processes))
                group.write("memory", table["memory"][1], str(memory))
                # No swapping past the limit either.
                if version == 1 and (folders["memory"] / "memory.memsw.limit_in_bytes").exists():
                    group.write("memory", "memory.memsw.limit_in_bytes", str(memory))
                elif version == 1:
                    group.write("memory", "memory.swappiness", "0")
                elif (folders["memory"] / "memory.swap.max").exists():
                    group.write("memory", "memory.swap.max", "0")
                return group
            except OSError:
                for folder in made:
                    try:
                        folder.rmdir()
                    except OSError:
                        pass
                raise
        except OSError as e:
            hint = ("the grader is not root" if os.geteuid() != 0 else
                    "cgroups are read-only or busy here (a container?)")
            raise CgroupUnavailable(f"cannot create the submission's cgroup ({hint}): {e}") from e

    @staticmethod
    def remove_stale(parent):
        """Removes the empty groups of graders that are gone (killed before they could remove
        their own)."""
        for folder in left_by_dead_graders(parent):
            try:
                folder.rmdir()  # fails while a process is still inside
            except OSError:
                pass

    def table(self):
        return self.V1 if self.version == 1 else self.V2

    def write(self, controller, file, text):
        (self.folders[controller] / file).write_text(text)

    def argv(self):
        """The command prefix that starts what follows inside the groups."""
        folders = sorted({str(f) for f in self.folders.values()})
        script = ('n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 125; '
                  'shift; n=$((n-1)); done; exec "$@"')
        return ["sh", "-c", script, "sh", str(len(folders)), *folders]

    def counter(self, controller):
        """How often the limit was reached: new tasks refused (pids), processes killed for
        memory (memory)."""
        _, _, file, key, _ = self.table()[controller]
        try:
            for line in (self.folders[controller] / file).read_text().splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[0] == key:
                    return int(fields[1])
        except OSError:
            pass
        return 0

    def counters(self):
        return {c: self.counter(c) for c in self.V1}

    def running(self):
        """Tasks (processes and threads) in the group now."""
        try:
            return int((self.folders["pids"] / "pids.current").read_text())
        except (OSError, ValueError):
            return 0

    def saturated(self, refused_before=None, window=0.3):
        """Whether something keeps the process limit full: the tasks fill nine tenths of it and
        new ones were refused since the counter read `refused_before` or within `window`
        seconds (a fork bomb, which never lets go; idle thread pools near a small limit do not
        count)."""
        if self.running() < 0.9 * self.processes:
            return False
        if refused_before is not None and self.counter("pids") > refused_before:
            return True
        before = self.counter("pids")
        time.sleep(window)
        return self.running() >= 0.9 * self.processes and self.counter("pids") > before

    def peak(self, controller):
        try:
            return int((self.folders[controller] / self.table()[controller][4]).read_text())
        except (OSError, ValueError):
            return None

    def explain(self, before, processes=True):
        """What the submission's limits did since `counters()` gave `before`, in words (or ''):
        the memory limit, and the process limit unless `processes` is false."""
        after = self.counters()
        words = []
        if after["memory"] > before["memory"]:
            words.append(f"the submission's processes together used more than the memory limit of "
                         f"{self.memory / 2**20:,.0f} MiB, and the out-of-memory killer stopped one")
        if processes and after["pids"] > before["pids"]:
            words.append(f"the submission reached its limit of {self.processes} processes and threads, and new "
                         "ones were refused")
        return "; ".join(words)

    def tasks(self):
        pids = set()
        for folder in self.folders.values():
            try:
                pids |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return pids

    def holds(self, pid):
        """Whether process `pid` is (still) in the group: a PID read from cgroup.procs may have
        ended and been reused by the time it is signalled."""
        mine = "/" + self.folders["pids"].parent.name + "/" + self.folders["pids"].name
        try:
            lines = pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return False
        controller = "pids" if self.version == 1 else ""
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(",") or (self.version == 2 and controllers == ""):
                return path.endswith(mine)
        return False

    def kill(self, wait=10.0):
        """Kills whatever still runs in the groups (the sandbox's PID namespace dies with its
        first process, but not at once). Returns whether they are empty."""
        deadline = time.monotonic() + wait
        while True:
            pids = self.tasks()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            killer = self.folders["pids"] / "cgroup.kill"  # cgroup v2, Linux 5.14 on
            if self.version == 2 and killer.exists():
                killer.write_text("1")
            else:
                for pid in pids:
                    if self.holds(pid):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            time.sleep(0.05)

    def remove(self):
        """Kills what is left and removes the groups."""
        self.kill()
        for folder in sorted(set(self.folders.values())):
            try:
                folder.rmdir()
            except OSError as e:
                print(f"grade_runner: could not remove the cgroup {folder}: {e}", file=sys.stderr)


def copy_build(template, build):
    """The submission's own build folder: a copy of the warm template (reflinks where the file
    system has them), so no submission can touch another's compiled code."""
    if build.exists():
        return
    tmp = build.with_name(build.name + ".partial")
    build.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(template), str(tmp)], check=True)
    tmp.rename(build)


def run_session(client, nb, code, start, succeeded, outcomes, cell_timeout, deadline, is_check, watch=None,
                cgroup=None, suspect=None):
    """In one fresh kernel: replays the cells that had succeeded (checks excepted), then runs the
    code cells from position `start` on, `watch` (a DiskWatch) on the kernel's process. Returns
    (next position, why the kernel must be restarted: None, or the failure's kind: "timeout",
    "dead", "processes", or "culprit": a replayed cell was found to fill the process limit, and
    the position is `suspect`'s, to run it again). `suspect` is the cell whose end found the process limit full when the
    last kernel stopped: the replay then looks for the cell that fills it (run_cells_of_session)."""
    with client.setup_kernel():
        if watch is not None:
            watch.start(client.km.provisioner.pid)
        try:
            return run_cells_of_session(client, nb, code, start, succeeded, outcomes, cell_timeout, deadline,
                                        is_check, watch, cgroup, suspect)
        finally:
            if watch is not None:
                watch.stop()


def run_cells_of_session(client, nb, code, position, succeeded, outcomes, cell_timeout, deadline, is_check, watch,
                         cgroup, suspect):
    """run_session's body, in its kernel."""
    for index in [i for i in succeeded if not is_check(i)]:
        replay = nbformat.from_dict(json.loads(json.dumps(nb.cells[index])))
        refused = cgroup.counter("pids") if cgroup is not None else 0
        try:
            client.execute_cell(replay, index)
        except (CellTimeoutError, DeadKernelError, CellExecutionError):
            pass
        if suspect is not None and fills_process_limit(cgroup, refused):
            # A cell that had succeeded left something running that kept starting processes (a
            # thread, a child) and the limit filled only during a later cell: this one.
            succeeded.remove(index)
            outcomes[index] = {**outcomes.get(index, {"cell": index}), "status": "failed", "kind": "processes",
                               "message": (f"it left processes or threads running that kept starting new ones, up "
                                           f"to the limit of {cgroup.processes}; found when cell {suspect + 1} was "
                                           "stopped, which then ran again")}
            return code.index(suspect), "culprit"
    previous = None
    while position < len(code):
        index = code[position]
        cell = nb.cells[index]
        position += 1
        if time.monotonic() > deadline:
            outcomes[index] = {"cell": index, "status": "skipped", "kind": "time limit",
                               "message": "the submission's time limit was reached before this cell"}
            continue
        started = time.monotonic()
        limits_before = cgroup.counters() if cgroup is not None else None
        try:
            client.execute_cell(cell, index)
            # A failed cell's late stderr lines go back to it, in the notebook shown to the student.
            reclaim_stragglers(previous, cell)
            failure = cell_failure(cell, strict=False)
        except CellTimeoutError:
            failure = ("timeout", f"timed out after {cell_timeout} s")
        except DeadKernelError:
            failure = ("dead", "kernel died")
        except CellExecutionError as e:
            failure = ("error", f"{e.ename}: {e.evalue}")
        seconds = round(time.monotonic() - started, 2)
        previous = cell
        if cgroup is not None and cgroup.saturated(limits_before["pids"]):
            # Left running at the process limit, every later cell would fail to start: the
            # kernel restarts with its processes killed, as after a crash.
            failure = ("processes", f"{cgroup.running()} processes and threads were still running after the cell, "
                                    f"at the limit of {cgroup.processes}: the kernel was restarted")
        if failure is None:
            outcomes[index] = {"cell": index, "status": "ok", "seconds": seconds}
            succeeded.append(index)
            continue
        kind, message = failure
        if kind == "error" and CRASH.search(message):
            kind, message = "dead", f"kernel died ({message})"
        if kind == "dead" and watch is not None and "SIGXFSZ" in message and not watch.tripped:
            # One file reached the limit (prlimit --fsize): the same breach, found by the kernel.
            watch.breach(max(disk_usage(watch.folders) - watch.base, watch.limit))
        limits = cgroup.explain(limits_before, processes=kind != "processes") if cgroup is not None else ""
        if kind == "dead" and watch is not None and watch.tripped:
            message = watch.message()
        if limits:
            message = f"{message}; {limits}"
        elif kind == "dead" and not (watch is not None and watch.tripped):
            # stderr may lose lines (evcxr's race); when the allocator's last words arrived, say so.
            stderr = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("name") == "stderr")
            oom = OUT_OF_MEMORY.search(stderr)
            if oom:
                message += f": {oom.group(0)} (the memory limit)"
        outcomes[index] = {"cell": index, "status": "failed", "kind": kind, "message": message,
                           "seconds": seconds}
        if kind in ("timeout", "dead", "processes"):
            return position, kind
    if previous is not None and time.monotonic() <= deadline:
        # The last cell's late lines (evcxr's relay thread) would be lost with the kernel:
        # they go back to it in the returned notebook. Its score stands: the failure record
        # that decides it comes before the cell's reply.
        flush_late_output(client, nb, previous)
    return position, None


def fills_process_limit(cgroup, refused_before, wait=3.0):
    """Whether the process limit fills within `wait` seconds (refusals counted from
    `refused_before`): run after each replayed cell when one of them is suspected."""
    deadline = time.monotonic() + wait
    while True:
        if cgroup.saturated(refused_before, window=0.1):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def run_cells(nb, kernel_name, cwd, cell_timeout, deadline, is_check, runtime, sandbox, max_restarts=6,
              watch=None, reset=None, cgroup=None):
    """Executes every code cell, restarting the kernel after a timeout or a crash; returns one
    outcome per code cell. In the sandbox the client talks to the kernel over Unix sockets in
    `runtime` (ZeroMQ's ipc transport), the sandbox having no network. When `watch` (a
    DiskWatch) stopped a kernel, `reset()` removes what the submission wrote before the next.
    A failed cell's message says which of `cgroup`'s limits (a Cgroup) it reached; what is left
    in the group when a kernel stops is killed before the next starts."""
    budget = OutputBudget()
    outcomes = {}
    succeeded = []  # code cells that ran cleanly, replayed after a restart
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    position = 0
    restarts = 0
    suspect = None
    while position < len(code):
        # The connection file goes where the sandbox can read it (jupyter_client would put it
        # in the system's temporary folder, which the sandbox does not see).
        # (nbclient needs the asynchronous manager: a blocking one's channels would block its
        # event loop, and a cell's time limit would never fire.)
        km = AsyncKernelManager(kernel_name=kernel_name, connection_file=str(runtime / f"kernel-{restarts}.json"))
        if sandbox:
            km.transport, km.ip = "ipc", str(runtime / f"kernel-{restarts}")
        client = BoundedClient(
            nb, km=km, kernel_name=kernel_name, timeout=cell_timeout, allow_errors=True, record_timing=True,
            shutdown_kernel="immediate", resources={"metadata": {"path": str(cwd)}}, budget=budget,
        )
        try:
            position, restart = run_session(client, nb, code, position, succeeded, outcomes, cell_timeout,
                                            deadline, is_check, watch, cgroup, suspect)
        finally:
            # nbclient leaves running a kernel whose manager it was given: stop it (the sandbox
            # dies with it) whatever happened, a cell that still loops included.
            if km.has_kernel:
                try:
                    run_sync(km.shutdown_kernel)(now=True)
                except Exception as e:  # noqa: BLE001 - the error that brought us here matters more
                    print(f"grade_runner: stopping the kernel failed: {e!r}; killing it", file=sys.stderr)
                    if km.has_kernel:
                        run_sync(km._async_kill_kernel)()
            if cgroup is not None and not cgroup.kill():
                print("grade_runner: the submission's processes outlived its kernel", file=sys.stderr)
        if watch is not None and watch.tripped:
            last = code[position - 1] if position else None
            if not restart and last is not None:
                # Stopped after the last cell's reply (the flush cell, a thread still writing):
                # the breach is that cell's.
                outcomes[last] = {**outcomes.get(last, {"cell": last}), "status": "failed", "kind": "dead",
                                  "message": watch.message()}
            reset()
            watch.clear()
        if not restart:
            break
        # After a cell that left the process limit full, the next kernel's replay looks for the
        # cell that started what fills it.
        suspect = code[position - 1] if restart == "processes" else None
        restarts += 1
        if restarts > max_restarts:
            for index in code[position:]:
                outcomes[index] = {"cell": index, "status": "skipped", "kind": "crashes",
                                   "message": f"not run: the kernel was restarted {max_restarts} times"}
            break
    return [outcomes[i] for i in code if i in outcomes]


def cmd_run(args):
    # A grader stopped with SIGTERM (a batch system's time limit) still stops its kernels,
    # removes its cgroup and gives back its run folder (the `finally` clauses).
    def stop(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    work = pathlib.Path(args.work).resolve()
    build = pathlib.Path(args.build).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sandbox = not args.no_sandbox
    for tool, package in (("bwrap", "bubblewrap"), ("socat", "socat")):
        if sandbox and shutil.which(tool) is None:
            print(f"grade_runner: {tool} ({package}) not found; install it (apt-get install {package}) "
                  "or pass --no-sandbox for trusted notebooks only", file=sys.stderr)
            return 2
    if shutil.which("choom") is None:
        print("grade_runner: choom (util-linux 2.33 or later) not found; install util-linux", file=sys.stderr)
        return 2
    memory, disk = parse_bytes(args.memory), parse_bytes(args.disk, "--disk")
    if not MIN_PROCESSES <= args.processes <= PID_MAX_LIMIT:
        raise SystemExit(f"grade_runner: --processes {args.processes}: expected {MIN_PROCESSES} to {PID_MAX_LIMIT}")
    cgroup = None
    if sandbox and not args.no_cgroup:
        try:
            cgroup = Cgroup.create(f"{os.getpid()}-{time.monotonic_ns()}", memory, args.processes)
        except CgroupUnavailable as e:
            print(f"grade_runner: {e}; the limits on a submission's processes and its total memory need "
                  "one: pass --no-cgroup to grade without them", file=sys.stderr)
            return 2
    try:
        return run_submission(args, work, build, sandbox, memory, disk, cgroup)
    finally:
        if cgroup is not None:
            memory_peak, tasks_peak = cgroup.peak("memory"), cgroup.peak("pids")
            print("grade_runner: the submission's peaks: "
                  f"{'?' if memory_peak is None else f'{memory_peak / 2**20:,.0f}'} MiB of memory, "
                  f"{'?' if tasks_peak is None else tasks_peak} processes and threads", file=sys.stderr)
            cgroup.remove()


def run_submission(args, work, build, sandbox, memory, disk, cgroup):
    """cmd_run's body, once the limits are in place."""
    # Brings the template up to date with the crate (at once when it is), so that no
    # submission's kernel compiles the toolkit itself.
    if cmd_warm(args):
        return 1
    copy_build(TEMPLATE, build)
    nb = nbformat.read(args.notebook, as_version=4)
    checks = set(json.loads(args.checks)) if args.checks else set()
    # The kernel's working folder: the notebooks' place, where the submission's folder is
    # mounted in the sandbox; without it, a run folder of its own (RUNS_DIR), emptied into the
    # submission's folder at the end.
    if sandbox:
        place, own, held = NOTEBOOK_DIR, work, None
    else:
        place, held = take_run_folder()
        own = place
    try:
        outcomes = run_in(args, nb, checks, work, build, own, place, sandbox, memory, disk, cgroup)
    finally:
        if held is not None:
            give_back_run_folder(own, held, work)
    nbformat.write(nb, args.executed)
    pathlib.Path(args.outcomes).write_text(json.dumps(outcomes, indent=1) + "\n")
    return 0


def run_in(args, nb, checks, work, build, own, place, sandbox, memory, disk, cgroup):
    """Executes `nb` in a kernel whose working folder is `place` (`own` on this side of the
    sandbox); returns the cells' outcomes."""
    with tempfile.TemporaryDirectory(prefix="sgm-grade-") as tmp:
        # The connection file's folder is mounted into the sandbox; it holds nothing else. (Short
        # paths: a Unix socket's path has at most 107 bytes.)
        runtime = pathlib.Path(tmp) / "run"
        runtime.mkdir()
        watch = DiskWatch([own, build, runtime], disk)

        def reset():
            # The submission's folder as it was given (empty), a fresh copy of the build folder,
            # and no files of the stopped kernel's (the next one writes its own). Each emptied
            # folder is replaced by a new one: the old one's name may still be in use.
            for folder in (own, build, runtime):
                aside = folder.with_name(folder.name + f".removed-{time.monotonic_ns()}")
                folder.rename(aside)
                if not remove_tree(aside):
                    print(f"grade_runner: could not remove {aside}", file=sys.stderr)
            own.mkdir()
            runtime.mkdir()
            copy_build(TEMPLATE, build)

        name = kernel_spec(tmp, work, build, runtime, memory, disk, sandbox, args.budget, cgroup, place)
        # The kernelspec `sgm-grade` is found through JUPYTER_PATH.
        with environment({"JUPYTER_PATH": tmp}):
            deadline = time.monotonic() + args.timeout
            place.mkdir(parents=True, exist_ok=True)
            return run_cells(nb, name, place, args.cell_timeout, deadline, lambda i: i in checks, runtime,
                             sandbox, watch=watch, reset=reset, cgroup=cgroup)


def template_hash():
    h = hashlib.sha256()
    for path in sorted((ROOT / "crate").rglob("*")):
        if path.is_file() and "target" not in path.parts:
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    h.update((ROOT / "Cargo.lock").read_bytes())
    h.update(KERNEL_JSON.read_bytes())
    h.update(str(EVCXR.stat().st_size).encode())
    return h.hexdigest()


def cmd_warm(_args=None):
    """Compiles the homework's first cell into the build template, once per crate version, so a
    submission's kernel starts from compiled dependencies (a copy of it)."""
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATE.parent / "grade-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = TEMPLATE / ".warm"
        digest = template_hash()
        if stamp.exists() and stamp.read_text() == digest:
            return 0
        seed = ROOT / ".tools/evcxr-build/slot-0"
        if not TEMPLATE.exists() and (seed.parent / "slot-0.warm").exists():
            # The notebooks' warm build folder already holds tch and sgm compiled: start there.
            copy_build(seed, TEMPLATE)
        TEMPLATE.mkdir(parents=True, exist_ok=True)
        NOTEBOOK_DIR.mkdir(parents=True, exist_ok=True)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(HOMEWORK_FIRST_CELL),
                    nbformat.v4.new_code_cell("use sgm_homework::prelude::*;\nprintln!(\"{}\", sgm_homework::describe_device(device()));")]
        with tempfile.TemporaryDirectory(prefix="sgm-warm-") as tmp:
            base = json.loads(KERNEL_JSON.read_text())
            spec = {"argv": [str(EVCXR), "--control_file", "{connection_file}"], "display_name": "warm",
                    "language": "rust", "env": {**base.get("env", {}), "EVCXR_TMPDIR": str(TEMPLATE)}}
            folder = pathlib.Path(tmp) / "kernels" / "sgm-grade-warm"
            folder.mkdir(parents=True)
            (folder / "kernel.json").write_text(json.dumps(spec))
            client = NotebookClient(nb, kernel_name="sgm-grade-warm", timeout=3600,
                                    resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
            with environment({"JUPYTER_PATH": tmp}):
                client.execute()
        failure = next((f for f in (cell_failure(c, strict=False) for c in nb.cells) if f), None)
        if failure:
            print(f"grade_runner: the grading build template did not build: {failure[1]}", file=sys.stderr)
            return 1
        stamp.write_text(digest)
    return 0


def cmd_cgroup_check(_args=None):
    """Whether a submission's cgroup can be made here (sgm grade asks once, before grading)."""
    try:
        Cgroup.create(f"{os.getpid()}-check", 1 << 30, 64).remove()
    except CgroupUnavailable as e:
        print(f"grade_runner: {e}; the limits on a submission's processes and its total memory need one: "
              "pass --no-cgroup to grade without them", file=sys.stderr)
        return 2
    return 0


def cmd_html(args):
    from html_pages import write_html

    nb = nbformat.read(args.input, as_version=4)
    # The pages show what students wrote (markdown, HTML outputs) to the instructor's browser.
    write_html(nb, pathlib.Path(args.output), sanitize=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--notebook", required=True)
    run.add_argument("--executed", required=True)
    run.add_argument("--outcomes", required=True)
    run.add_argument("--work", required=True)
    run.add_argument("--build", required=True)
    run.add_argument("--checks", help="JSON list of the graded cells' indices (not replayed)")
    run.add_argument("--cell-timeout", type=int, default=300)
    run.add_argument("--timeout", type=int, default=1200)
    run.add_argument("--memory", default="8G",
                     help="memory of one process (data segment, prlimit) and of all the submission's together (cgroup)")
    run.add_argument("--disk", default="2G", help="what a submission may write into its folders (DiskWatch)")
    run.add_argument("--processes", type=int, default=512,
                     help="processes and threads a submission may have at once (its cgroup)")
    run.add_argument("--no-cgroup", action="store_true",
                     help="grade without the limits on a submission's processes and total memory")
    run.add_argument("--budget", default="ci", help="SGM_BUDGET for the notebook")
    run.add_argument("--no-sandbox", action="store_true")
    sub.add_parser("warm")
    sub.add_parser("cgroup-check")
    html = sub.add_parser("html")
    html.add_argument("input")
    html.add_argument("output")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "warm": cmd_warm, "html": cmd_html, "cgroup-check": cmd_cgroup_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
