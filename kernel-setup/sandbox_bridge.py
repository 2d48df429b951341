"""Starts a kernel inside a sandbox that has no network, reachable only through Unix sockets.

`grade_runner.py` runs each submission's kernel in bubblewrap with its own, empty network
namespace (`--unshare-net`: a loopback and nothing else), so student code can reach neither
the machine's services nor other submissions' kernels. The Jupyter client outside talks to the
kernel over ZeroMQ's `ipc` transport (Unix sockets in a folder mounted into the sandbox), but
evcxr_jupyter is built with ZeroMQ's TCP transport only. This script, the sandbox's first
process, bridges the two:

  1. reads the connection file the client wrote (transport "ipc", paths `{ip}-{port}`);
  2. writes the kernel's own connection file (same key, TCP on the sandbox's loopback, ports
     40001-40005: the sandbox's loopback is its own, so no port can be taken by anyone else);
  3. starts one `socat` per channel that accepts on the Unix socket and forwards each connection
     to the kernel's port;
  4. runs the kernel command given after `--`, with `{kernel_file}` replaced by the file of step 2,
     and exits with its status (bubblewrap then ends the socats with the sandbox).

Usage: sandbox_bridge.py CONNECTION_FILE -- KERNEL_COMMAND... {kernel_file} ...
"""
import json
import os
import pathlib
import subprocess
import sys

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
FIRST_PORT = 40001


def main(argv):
    if len(argv) < 3 or argv[1] != "--":
        print("usage: sandbox_bridge.py CONNECTION_FILE -- KERNEL_COMMAND...", file=sys.stderr)
        return 2
    info = json.loads(pathlib.Path(argv[0]).read_text())
    if info.get("transport") != "ipc":
        print(f"sandbox_bridge: {argv[0]}: transport {info.get('transport')!r}, expected 'ipc'", file=sys.stderr)
        return 2
    kernel = dict(info, transport="tcp", ip="127.0.0.1")
    bridges = []
    for offset, channel in enumerate(CHANNELS):
        port = FIRST_PORT + offset
        kernel[f"{channel}_port"] = port
        socket = f"{info['ip']}-{info[channel + '_port']}"
        bridges.append(
            subprocess.Popen(
                ["socat", f"UNIX-LISTEN:{socket},fork,unlink-early,mode=600", f"TCP:127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL,
            )
        )
    kernel_file = pathlib.Path("/tmp/kernel-tcp.json")
    kernel_file.write_text(json.dumps(kernel))
    command = [str(kernel_file) if a == "{kernel_file}" else a for a in argv[2:]]
    try:
        return subprocess.call(command)
    finally:
        for bridge in bridges:
            bridge.terminate()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
