"""The homework's validate cell against a real Jupyter server that listens on a Unix socket
(`jupyter server --sock PATH`, as shared machines run it so that no port is open to other users),
with the real "Rust (sgm)" kernel:

  socket   A temporary root with a copy of a release notebook, a server on a socket in a
           temporary runtime folder, a notebook session for the copy started through the server's
           REST API (over the socket), the kernel driven through its own channels (its connection
           file). `sgm_homework::validate()` must check the served copy; then the session is
           renamed (PATCH /api/sessions/ID, what JupyterLab's Rename does, the kernel keeps
           running) and the file moved, and the same cell must check the file under its new
           name, which only the server can tell it (the name the kernel was started with is
           gone).

Prints what it did and one last line `server check socket: ok (...)`, or `server check socket:
FAILED: <why>` and exits 1. The server and its kernel are stopped on every path; the server's log
lands in the --out folder.

Usage: python kernel-setup/server_check.py socket NOTEBOOK [--out DIR] [--cell-timeout S]
"""
import argparse
import http.client
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

from browser_check import ROOT, CheckFailed, _terminate, log


class SocketHTTP(http.client.HTTPConnection):
    """HTTP over a Unix socket (the standard library speaks it once connected)."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


def api(sock, token, method, path, body=None):
    connection = SocketHTTP(sock, timeout=30)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    if response.status >= 300:
        raise CheckFailed(f"{method} {path}: {response.status} {text[:300]!r}")
    return json.loads(text) if text else None


def run_cell(client, code, timeout):
    """Runs `code` in the kernel; returns (its printed text, the error's text or None)."""
    printed, errors = [], []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind in ("display_data", "execute_result"):
            printed.append(content.get("data", {}).get("text/plain", ""))
        elif kind == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)
    if reply["content"]["status"] != "ok" and not errors:
        errors.append(f"status {reply['content']['status']}")
    return "".join(printed), ("\n".join(errors) or None)


def checked_path(text):
    found = re.search(r"Checked (.+?) as saved", text)
    return found and pathlib.Path(found.group(1))


def check_socket(notebook, out, cell_timeout):
    from jupyter_client import BlockingKernelClient

    work = pathlib.Path(tempfile.mkdtemp(prefix="sgm-server-check-"))
    server = client = None
    try:
        root, runtime = work / "root", work / "runtime"
        (root / "hw").mkdir(parents=True)
        shutil.copy(notebook, root / "hw" / "mine.ipynb")
        sock, token = work / "server.sock", secrets.token_hex(16)
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_TOKEN=token)
        out.mkdir(parents=True, exist_ok=True)
        server_log = open(out / "jupyter-server-socket.log", "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--sock={sock}", f"--ServerApp.root_dir={root}",
             "--allow-root", "--ServerApp.open_browser=False"],
            env=env, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while not (sock.exists() and list(runtime.glob("jpserver-*.json"))):
            if server.poll() is not None or time.time() > deadline:
                raise CheckFailed(f"the server did not start on {sock} (exit {server.poll()}; see its log)")
            time.sleep(0.2)
        info = json.loads(next(runtime.glob("jpserver-*.json")).read_text())
        log(f"    server {info['version']} on {info['url']} (port {info['port']}, sock {info['sock']})")
        session = api(sock, token, "POST", "/api/sessions",
                      {"path": "hw/mine.ipynb", "type": "notebook", "name": "mine.ipynb", "kernel": {"name": "sgm"}})
        client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{session['kernel']['id']}.json"))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        start = time.time()
        _, error = run_cell(client, f':dep sgm_homework = {{ path = "{ROOT / "crate" / "homework"}" }}', cell_timeout)
        if error:
            raise CheckFailed(f"the :dep cell failed: {error}")
        log(f"    :dep sgm_homework in {time.time() - start:.0f} s")

        def validate(expected):
            text, error = run_cell(client, "sgm_homework::validate()?;", cell_timeout)
            log(f"    validate cell: {text.strip()[:300]!r} {error or ''}")
            found = checked_path(text)
            if found != root / "hw" / expected:
                raise CheckFailed(f"the validate cell checked {found}, not hw/{expected}: {text[:600]!r} {error}")
            # evcxr sends a `?` error to stderr (the stream, here).
            if "Not ready" not in text + (error or ""):
                raise CheckFailed(f"the validate cell passed a release with no answers: {error} {text[-300:]!r}")
            return text.count("not answered yet")

        before = validate("mine.ipynb")
        api(sock, token, "PATCH", f"/api/sessions/{session['id']}", {"path": "hw/renamed.ipynb"})
        (root / "hw" / "mine.ipynb").rename(root / "hw" / "renamed.ipynb")
        after = validate("renamed.ipynb")
        if before == 0 or after != before:
            raise CheckFailed(f"{before} unanswered cells before the rename, {after} after")
        return f"the served copy, then the file renamed under the same kernel ({before} unanswered cells each)"
    finally:
        if client is not None:
            client.stop_channels()
        if server is not None:
            # The server's session: SIGTERM stops its kernels too; the group for what is left.
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


def main():
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=["socket"])
    parser.add_argument("notebook", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "target" / "browser-tests")
    parser.add_argument("--cell-timeout", type=float, default=600)
    args = parser.parse_args()
    try:
        summary = check_socket(args.notebook.resolve(), args.out, args.cell_timeout)
    except CheckFailed as e:
        log(f"server check {args.check}: FAILED: {e}")
        sys.exit(1)
    log(f"server check {args.check}: ok ({summary})")


if __name__ == "__main__":
    main()
