"""Checks in a real browser: Debian's chromium (/usr/bin/chromium, installed by set-up) driven by
PyPI's playwright, which never downloads a browser of its own here.

  mathjax  An HTML page written by html_pages.write_html from a small notebook with formulas,
           moved to another folder and opened through file:// with every network request
           refused: MathJax (the copy beside the page) must typeset the formulas, with its web
           fonts, and the page must have needed nothing but local files.
  lab      JupyterLab on a free local port with a random token, serving a temporary copy of a
           notebook: the cells from the top down to and including the first graded check cell
           (metadata {"sgm": {"grade": ...}}) after the first figure cell (tag "figure"; the
           first graded cell when no figure comes after it) are run through the UI
           (Shift+Enter, one cell at a time) in the "Rust (sgm)" kernel; the page must then show
           a figure (an <img> with a PNG data URL in an output area) and the check's name (the
           test_... functions in its source, else its check("...") title) in its output.
           Where the notebook has a cell calling `sgm_homework::validate()` (the release's last
           cell), that cell is run next: it must name the served copy and find every answer cell
           the release lists (sgm.cells) not answered yet; then a cell is added below it through
           the UI, the notebook saved (Ctrl+S), and the cell run again: it must now also name the
           added cell, which it can only know from the file as saved.

Prints what it did and one last line `browser check <name>: ok (...)`, or `browser check <name>:
FAILED: <why>` and exits 1. A screenshot of the page lands in the --out folder either way.
The JupyterLab server, its kernels and the browser are stopped on every path.

Usage: python kernel-setup/browser_check.py mathjax [--out DIR]
       python kernel-setup/browser_check.py lab NOTEBOOK [--out DIR] [--first-cell-timeout S] [--cell-timeout S]
"""
import argparse
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Schemes that never leave the machine (MathJax probes its fonts with about:blank).
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
# MathJax's NativeMML styles name TeX fonts that jupyter-server-mathjax does not ship; only the
# hidden assistive MathML uses them (for \mathbb and the like), so their misses are harmless.
HARMLESS_MISSING = re.compile(r"/mathjax/fonts/HTML-CSS/TeX/otf/[^/?]+\.otf(\?|$)")


class CheckFailed(Exception):
    pass


def log(message):
    print(message, flush=True)


def _terminate(signum, frame):
    # Turn SIGTERM into an exception, so that the finally blocks stop the server and browser.
    raise SystemExit(128 + signum)


def launch_browser(playwright, profile):
    if not os.access(CHROMIUM, os.X_OK):
        raise CheckFailed(f"{CHROMIUM} is missing: run kernel-setup/setup.sh (it installs Debian's chromium)")
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
    )


def screenshot(page, path):
    try:
        page.screenshot(path=str(path), full_page=False)
        log(f"    screenshot: {path}")
    except Exception as e:  # the page may be gone; the check's own failure matters more
        log(f"    (no screenshot: {e})")


# --- mathjax -----------------------------------------------------------------------------------

FORMULA_MARKDOWN = r"""# Formulas offline

The score $\nabla_x \log p(x)$ of the data, learned by denoising score matching:

$$\mathbb{E}_{x \sim p,\ \tilde x \sim \mathcal{N}(x, \sigma^2 I)} \left\| s_\theta(\tilde x) + \frac{\tilde x - x}{\sigma^2} \right\|^2$$
"""


def check_mathjax(out):
    import nbformat
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(HERE))
    from html_pages import write_html

    with tempfile.TemporaryDirectory(prefix="sgm-browser-mathjax-") as tmp:
        tmp = pathlib.Path(tmp)
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_markdown_cell(FORMULA_MARKDOWN))
        start = time.monotonic()
        write_html(nb, tmp / "written" / "formulas.html")
        log(f"    page written with its MathJax copy in {time.monotonic() - start:.1f}s")
        # The page must not depend on where it was written: move the whole folder.
        shutil.copytree(tmp / "written", tmp / "moved")
        shutil.rmtree(tmp / "written")
        page_path = tmp / "moved" / "formulas.html"
        requests, refused, failed = [], [], []
        with sync_playwright() as p:
            browser = launch_browser(p, tmp / "profile")
            try:
                browser.set_offline(True)

                def route(r):
                    if r.request.url.startswith(LOCAL_SCHEMES):
                        r.continue_()
                    else:
                        refused.append(r.request.url)
                        r.abort("internetdisconnected")

                browser.route("**/*", route)
                page = browser.new_page()
                page.on("request", lambda r: requests.append(r.url))
                page.on("requestfailed", lambda r: failed.append(r.url))
                try:
                    start = time.monotonic()
                    page.goto(page_path.as_uri())
                    try:
                        page.wait_for_function("window.MathJax && MathJax.isReady === true", timeout=30_000)
                    except PlaywrightTimeout:
                        raise CheckFailed(
                            "MathJax did not start within 30s; requests that left the machine: "
                            f"{sorted(set(refused))}; failed: {sorted(set(failed))}"
                        ) from None
                    # Resolves after everything MathJax has queued so far (the page's Typeset).
                    page.evaluate("() => new Promise(done => MathJax.Hub.Queue(() => done(true)))")
                    page.wait_for_function("document.fonts.status === 'loaded'", timeout=30_000)
                    seconds = time.monotonic() - start
                    state = page.evaluate(
                        """() => ({
                        version: MathJax.version,
                        renderer: MathJax.Hub.outputJax['jax/mml'] && MathJax.Hub.outputJax['jax/mml'][0].id,
                        inline: [...document.querySelectorAll('span.MathJax')].filter(e => !e.closest('.MathJax_Display')).length,
                        display: document.querySelectorAll('div.MathJax_Display').length,
                        sources: document.querySelectorAll('script[type^="math/tex"]').length,
                        errors: document.querySelectorAll('.MathJax_Error, merror, .mjx-error').length,
                        text: document.body.innerText,
                        fonts: [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family),
                    })"""
                    )
                finally:
                    screenshot(page, out / "mathjax.png")
            finally:
                browser.close()
        log(
            f"    MathJax {state['version']} ({state['renderer']}): {state['inline']} inline and "
            f"{state['display']} display formulas from {state['sources']} sources in {seconds:.1f}s"
        )
        log(f"    web fonts loaded: {', '.join(sorted(set(state['fonts']))) or 'none'}")
        not_local = sorted({u for u in requests + refused if not u.startswith(LOCAL_SCHEMES)})
        file_failed = sorted(
            {u for u in failed if u.startswith("file:") and not HARMLESS_MISSING.search(u)}
        )
        harmless = sorted({u.rsplit("/", 1)[-1] for u in failed if HARMLESS_MISSING.search(u)})
        log(f"    requests: {len(requests)}, of them not local: {len(not_local)}")
        if harmless:
            log(f"    missing TeX fonts of the hidden assistive MathML (harmless): {', '.join(harmless)}")
        problems = []
        if not_local:
            problems.append(f"the page asked the network for {not_local}")
        if file_failed:
            problems.append(f"local files failed to load: {file_failed}")
        if state["sources"] < 2 or state["inline"] < 1 or state["display"] < 1:
            problems.append(
                f"formulas not typeset: {state['inline']} inline, {state['display']} display, "
                f"{state['sources']} sources (want 2)"
            )
        if state["errors"]:
            problems.append(f"{state['errors']} MathJax error elements")
        for raw in ("$\\nabla", "\\nabla", "\\log p", "$$"):
            if raw in state["text"]:
                problems.append(f"raw LaTeX {raw!r} still visible as text")
        if not any(f.startswith("STIXMathJax") for f in state["fonts"]):
            problems.append("MathJax's STIX-Web web fonts did not load from the copy")
        if problems:
            raise CheckFailed("; ".join(problems))
        return f"{state['inline']} inline + {state['display']} display formulas typeset offline in {seconds:.1f}s"


# --- lab ---------------------------------------------------------------------------------------

DEP_PATH = re.compile(r'(path\s*=\s*")([^"]+)(")')


def pick_target(nb):
    """The graded check cell to run down to: the first code cell with metadata sgm.grade, unless
    a figure cell (tag "figure") comes after it; then the first graded cell after the first
    figure cell, so that the cells run show both a figure and a check."""
    graded = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.metadata.get("sgm") or {}).get("grade")
    ]
    if not graded:
        raise CheckFailed("the notebook has no code cell with metadata sgm.grade")
    figures = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "figure" in c.metadata.get("tags", [])
    ]
    target = graded[0]
    if figures and figures[0] > graded[0]:
        after = [i for i in graded if i > figures[0]]
        if after:
            target = after[0]
        log(
            f"    the first graded cell ({graded[0] + 1}) comes before the first figure cell "
            f"({figures[0] + 1}): running down to the first graded cell after it"
            + ("" if after else " (there is none: the first graded cell then)")
        )
    return target


def check_names(source):
    """What the check cell's output must name: the `test_...` functions its source names, else
    the title of its `check("...", ...)` call."""
    names = sorted(set(re.findall(r"\btest_[A-Za-z0-9_]+", source)))
    if not names:
        title = re.search(r'\bcheck\(\s*"((?:[^"\\]|\\.)+)"', source)
        names = [title.group(1)] if title else []
    return names


def prepare_copy(notebook, folder):
    """Copies the notebook into `folder`; relative `:dep ... path = "..."` entries become
    absolute (resolved against the original's folder), so the copy builds the same crates.
    Returns (copy path, notebook node, index of the first graded cell, ids of the cells the
    copy changed)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    target = pick_target(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    lines = []
    for line in first.source.splitlines():
        if line.lstrip().startswith(":dep"):

            def absolute(m):
                p = pathlib.Path(m.group(2))
                return m.group(1) + str(p if p.is_absolute() else (notebook.parent / p).resolve()) + m.group(3)

            new = DEP_PATH.sub(absolute, line)
            if new != line:
                log(f"    in the copy: {new.strip()}")
            line = new
        lines.append(line)
    changed = [first.get("id")] if "\n".join(lines) != first.source else []
    first.source = "\n".join(lines)
    spec = nb.metadata.get("kernelspec") or {}
    if spec.get("name") != "sgm":
        log(f"    note: the notebook's kernelspec is {spec.get('name')!r}; the copy uses 'sgm'")
        nb.metadata["kernelspec"] = {"name": "sgm", "display_name": "Rust (sgm)", "language": "rust"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    copy = folder / notebook.name
    nbformat.write(nb, copy)
    return copy, nb, target, changed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    """Process ids below `pid` (from /proc), deepest last."""
    children = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is as good as gone.
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LabServer:
    """`jupyter lab` on a free port with a random token, serving `root`; stop() ends it and every
    process it started (its kernels), by their ids."""

    def __init__(self, root, state, log_path):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = state / "user-settings"
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        # Every cell stays in the page (no virtual scrolling), so its outputs can be read.
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        apputils = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        apputils.parent.mkdir(parents=True, exist_ok=True)
        apputils.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ)
        env.update(
            JUPYTER_RUNTIME_DIR=str(state / "runtime"),
            SGM_OUTPUT=str(state / "output"),
            SGM_BUDGET=os.environ.get("SGM_BUDGET", "ci"),
        )
        self.log_file = open(log_path, "w")
        cmd = [
            str(ROOT / ".venv/bin/jupyter"),
            "lab",
            "--no-browser",
            f"--IdentityProvider.token={self.token}",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={state / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.process = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.known = set()

    def api(self, method, path, timeout=10):
        req = urllib.request.Request(
            f"{self.base}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if body else None

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CheckFailed(f"jupyter lab exited with {self.process.returncode}; see {self.log_file.name}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise CheckFailed(f"jupyter lab did not answer within {timeout}s; see {self.log_file.name}")

    def remember_children(self):
        if self.process.poll() is None:
            self.known.update(descendants(self.process.pid))

    def stop(self):
        self.remember_children()
        if self.process.poll() is None:
            try:  # shuts its kernels down cleanly, then the server
                self.api("POST", "/api/shutdown", timeout=10)
            except Exception:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in self.known):
            time.sleep(0.2)
        left = [p for p in self.known if alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log_file.close()
        return left


CELLS_JS = "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook > .jp-Cell, .jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-viewport > .jp-Cell')]"


def cell_prompt(page, index):
    return page.evaluate(
        f"(i) => {{ const c = ({CELLS_JS})()[i]; const p = c && c.querySelector('.jp-InputArea-prompt'); return p ? p.textContent.trim() : null; }}",
        index,
    )


def check_lab(notebook, out, first_cell_timeout, cell_timeout):
    from playwright.sync_api import sync_playwright

    notebook = pathlib.Path(notebook).resolve()
    if not notebook.is_file():
        raise CheckFailed(f"{notebook} does not exist")
    log(f"    notebook: {notebook}")
    with tempfile.TemporaryDirectory(prefix="sgm-browser-lab-") as tmp:
        tmp = pathlib.Path(tmp)
        served = tmp / "notebooks"
        served.mkdir()
        copy, nb, target, changed = prepare_copy(notebook, served)
        cells = nb.cells[: target + 1]
        check = nb.cells[target]
        grade = check.metadata["sgm"]
        names = check_names(check.source)
        log(
            f"    runs cells 1-{target + 1} of {len(nb.cells)} "
            f"({sum(c.cell_type == 'code' for c in cells)} code cells); check: cell {target + 1}, "
            f"grade {grade.get('grade')!r}, {grade.get('points')} points, names in its source: {names or 'none'}"
        )
        server = LabServer(served, tmp, out / f"jupyter-lab-{notebook.stem}.log")
        refused = []
        try:
            start = time.monotonic()
            server.wait_ready()
            log(f"    jupyter lab on port {server.port} ready in {time.monotonic() - start:.1f}s")
            with sync_playwright() as p:
                browser = launch_browser(p, tmp / "profile")
                try:

                    def route(r):
                        url = r.request.url
                        if url.startswith(server.base) or url.startswith(LOCAL_SCHEMES):
                            r.continue_()
                        else:
                            refused.append(url)
                            r.abort("internetdisconnected")

                    browser.route("**/*", route)
                    page = browser.pages[0] if browser.pages else browser.new_page()
                    try:
                        result = drive_lab(page, server, copy.name, cells, target, names, first_cell_timeout, cell_timeout)
                        validate = next((i for i, c in enumerate(nb.cells) if VALIDATE_CALL in c.source), None)
                        if validate is not None:
                            answers = sum(bool(c.get("answer")) for c in nb.metadata.get("sgm", {}).get("cells", []))
                            result += "; " + drive_validate(page, server, copy.name, validate, answers, changed, cell_timeout)
                    finally:
                        server.remember_children()
                        screenshot(page, out / f"lab-{notebook.stem}.png")
                finally:
                    browser.close()
        finally:
            left = server.stop()
            if left:
                log(f"    killed processes that outlived the server: {left}")
        if refused:
            log(f"    refused network requests (not needed): {sorted(set(refused))[:5]}")
        return result


def drive_lab(page, server, name, cells, target, names, first_cell_timeout, cell_timeout):
    start = time.monotonic()
    page.goto(f"{server.base}/lab/tree/{name}?token={server.token}", timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
    # The kernel named in the notebook starts by itself; wait until the server says it is idle.
    deadline = time.monotonic() + 120
    while True:
        sessions = server.api("GET", "/api/sessions")
        kernels = [s["kernel"] for s in sessions if s.get("path", "").endswith(name) and s.get("kernel")]
        if kernels and kernels[0].get("execution_state") == "idle":
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"no idle kernel for {name} after 120s: sessions {sessions}")
        page.wait_for_timeout(500)
    if kernels[0].get("name") != "sgm":
        raise CheckFailed(f"the notebook runs kernel {kernels[0].get('name')!r}, not 'sgm'")
    count = page.evaluate(f"() => ({CELLS_JS})().length")
    log(f"    notebook open with {count} cells in {time.monotonic() - start:.1f}s")
    if count < len(cells):
        raise CheckFailed(f"the page shows {count} cells, the notebook has at least {len(cells)}")
    # Make the first cell active (command mode), then Shift+Enter runs a cell and moves on.
    page.evaluate(f"() => ({CELLS_JS})()[0].scrollIntoView()")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    first_code = True
    for index, cell in enumerate(cells):
        active = page.evaluate(f"() => ({CELLS_JS})().findIndex(c => c.classList.contains('jp-mod-active'))")
        if active != index:
            raise CheckFailed(f"cell {active + 1} is active, expected cell {index + 1}")
        started = time.monotonic()
        page.keyboard.press("Shift+Enter")
        if cell.cell_type != "code":
            continue
        limit = first_cell_timeout if first_code else cell_timeout
        first_code = False
        label = (cell.source.strip().splitlines() or [""])[0][:60]
        prompt = wait_ran(page, index, None, started, limit, f" ({label!r})")
        log(f"    cell {index + 1} {prompt} ran in {time.monotonic() - started:.1f}s: {label!r}")
    outputs = page.evaluate(
        f"""() => ({CELLS_JS})().map(c => ({{
            text: [...c.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n'),
            pngs: [...c.querySelectorAll('.jp-OutputArea-output img')]
                .filter(i => (i.getAttribute('src') || '').startsWith('data:image/png') && i.naturalWidth > 0)
                .map(i => i.naturalWidth + 'x' + i.naturalHeight),
            errors: c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length,
        }}))"""
    )
    figures = [(i + 1, size) for i, o in enumerate(outputs[: target + 1]) for size in o["pngs"]]
    check_text = outputs[target]["text"]
    for i, o in enumerate(outputs[:target]):
        if o["errors"]:
            log(f"    note: cell {i + 1} shows error output: {o['text'][:300]!r}")
    log(f"    figures on the page (cell, size): {figures}")
    log(f"    check cell output: {check_text.strip()[:400]!r}")
    if not figures:
        raise CheckFailed("no figure (<img> with a PNG data URL) in the outputs of the cells run")
    if names:
        shown = [n for n in names if n in check_text]
        if not shown:
            raise CheckFailed(f"the check cell's output names none of {names}")
    else:
        shown = re.findall(r"\btest_[A-Za-z0-9_]+", check_text)
        if not shown:
            raise CheckFailed("the check cell's output names no test (test_...)")
    return f"{len(figures)} figure(s), check {', '.join(sorted(set(shown)))} shown, in {time.monotonic() - start:.1f}s"


VALIDATE_CALL = "sgm_homework::validate()"


def wait_ran(page, index, before, started, limit, label=""):
    """Waits until cell `index` shows an execution count (`[N]:`) other than `before`, at most
    `limit` s after `started`; returns that prompt."""
    while True:
        prompt = cell_prompt(page, index)
        if prompt and prompt != before and re.fullmatch(r"\[\d+\]:", prompt):
            return prompt
        if time.monotonic() - started > limit:
            raise CheckFailed(f"cell {index + 1}{label} still shows {prompt!r} after {limit}s")
        page.wait_for_timeout(250)


def run_cell(page, index, limit, until=None):
    """Selects cell `index` (command mode), runs it with Shift+Enter and waits for a new
    execution count, then (outputs and the reply travel apart) up to 10 s more until its
    outputs' text satisfies `until`; returns that text."""
    before = cell_prompt(page, index)
    page.evaluate(f"(i) => ({CELLS_JS})()[i].scrollIntoView()", index)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    started = time.monotonic()
    page.keyboard.press("Shift+Enter")
    prompt = wait_ran(page, index, before, started, limit)
    log(f"    cell {index + 1} {prompt} ran in {time.monotonic() - started:.1f}s")
    settled = time.monotonic() + 10
    while True:
        text = page.evaluate(
            f"(i) => [...({CELLS_JS})()[i].querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n')",
            index,
        )
        if until is None or until(text) or time.monotonic() > settled:
            return text
        page.wait_for_timeout(250)


def drive_validate(page, server, name, index, answers, changed, limit):
    """The release's last cell, `sgm_homework::validate()`, run twice: on the notebook as
    served (every answer cell unanswered, and the cells the copy `changed` edited), then after
    a cell is added and the notebook saved."""
    done = lambda text: "Ready" in text or "Not ready:" in text  # noqa: E731
    text = run_cell(page, index, limit, done)
    log(f"    validate cell output: {text.strip()[:600]!r}")
    unanswered = text.count("not answered yet")
    if name not in text:
        raise CheckFailed(f"the validate cell does not name the notebook {name}: {text[:300]!r}")
    if unanswered != answers:
        raise CheckFailed(f"the validate cell found {unanswered} unanswered cells, the release lists {answers}: {text[:600]!r}")
    edited = [line for line in text.splitlines() if "a locked cell that differs" in line]
    if len(edited) != len(changed) or not all(any(f"(id {i}:" in line for i in changed) for line in edited):
        raise CheckFailed(f"the validate cell names edited cells {edited}, the copy changed {changed}")
    problems = answers + len(changed)
    if f"Not ready: {problems} problem(s)" not in text:
        raise CheckFailed(f"the validate cell does not end with 'Not ready: {problems} problem(s)': {text[-300:]!r}")
    # A cell added below it through the UI, then saved: only the saved file can tell the kernel.
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type("let added_in_the_browser = 1;")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while "added_in_the_browser" not in json.dumps(server.api("GET", f"/api/contents/{name}?content=1")["content"]):
        if time.monotonic() > deadline:
            raise CheckFailed("the notebook was not saved 30 s after Ctrl+S")
        page.wait_for_timeout(250)
    text = run_cell(page, index, limit, done)
    log(f"    validate cell output after adding a cell and saving: {text.strip()[:600]!r}")
    if "is not in the assignment and is left out" not in text or f"Not ready: {problems + 1} problem(s)" not in text:
        raise CheckFailed(f"after a cell was added and saved, the validate cell does not name it: {text[:600]!r}")
    # Rename through the UI (File > Rename Notebook…): the server moves the kernel's session to
    # the new name and the kernel keeps running, so the check must follow the session, not the
    # name the kernel was started with (the old file is gone). (Save As, in JupyterLab 4, opens
    # the copy with a kernel of its own, which is told the new name.)
    renamed = "renamed-" + name
    kernel_before = [s["kernel"]["id"] for s in server.api("GET", "/api/sessions") if s.get("path", "").endswith(name)]
    page.keyboard.press("Escape")
    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-itemLabel", has_text="Rename Notebook").click()
    field = page.locator(".jp-Dialog input")
    field.wait_for(timeout=30_000)
    field.fill(renamed)
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 30
    while True:
        sessions = server.api("GET", "/api/sessions")
        kernel_after = [s["kernel"]["id"] for s in sessions if s.get("path", "").endswith(renamed)]
        if kernel_after:
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"no session for {renamed} 30 s after the rename: {sessions}")
        page.wait_for_timeout(250)
    if kernel_after != kernel_before:
        raise CheckFailed(f"the rename changed the kernel ({kernel_before} to {kernel_after}): nothing to follow")
    text = run_cell(page, index, limit, done)
    log(f"    validate cell output after the rename to {renamed}: {text.strip()[:600]!r}")
    checked = re.search(r"Checked (\S+) as saved", text)
    if not checked or pathlib.Path(checked.group(1)).name != renamed:
        raise CheckFailed(f"after the rename to {renamed}, the validate cell checked {checked and checked.group(1)}: {text[:600]!r}")
    if f"Not ready: {problems + 1} problem(s)" not in text:
        raise CheckFailed(f"after the rename, the validate cell does not find the same problems: {text[:600]!r}")
    return (
        f"validate cell: {answers} unanswered cells, then the added cell, from the saved file, "
        f"then the same from the file renamed {renamed} under the same kernel"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=["mathjax", "lab"])
    parser.add_argument("notebook", nargs="?", help="lab: the notebook to run")
    parser.add_argument("--out", default=str(ROOT / "target/browser-tests"), help="screenshots and logs")
    parser.add_argument("--first-cell-timeout", type=float, default=900, help="lab: seconds for the first code cell")
    parser.add_argument("--cell-timeout", type=float, default=600, help="lab: seconds for each other cell")
    args = parser.parse_args(argv)
    if args.check == "lab" and not args.notebook:
        parser.error("lab needs a NOTEBOOK")
    signal.signal(signal.SIGTERM, _terminate)
    out = pathlib.Path(args.out).resolve() / args.check
    out.mkdir(parents=True, exist_ok=True)
    log(f"==> browser check {args.check}")
    start = time.monotonic()
    try:
        if args.check == "mathjax":
            summary = check_mathjax(out)
        else:
            summary = check_lab(pathlib.Path(args.notebook), out, args.first_cell_timeout, args.cell_timeout)
    except CheckFailed as e:
        log(f"browser check {args.check}: FAILED: {e} (after {time.monotonic() - start:.1f}s; screenshots and logs in {out})")
        return 1
    except SystemExit as e:  # SIGTERM: the server and browser are already stopped
        log(f"browser check {args.check}: FAILED: terminated (exit {e.code})")
        raise
    except Exception as e:
        log(f"browser check {args.check}: FAILED: {type(e).__name__}: {e} (screenshots and logs in {out})")
        return 1
    log(f"browser check {args.check}: ok ({summary}; {time.monotonic() - start:.1f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
