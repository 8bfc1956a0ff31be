"""hearth_common.procs against a real process: a small HTTP server that binds late, prints, and handles or ignores
Ctrl-C; the oracles are a plain http.client request, the process's own exit status and what it printed."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from hearth_common.procs import CODE_ROOT, child_env, free_port
from hearth_common.version import version_line
from testkit.procs import ProcessError, ServerProcess

SERVER = """
import http.server, os, signal, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
if mode == "deaf":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:  # Ctrl-C is KeyboardInterrupt even when the test run itself was started in the background (SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
if mode == "crash":
    sys.exit("cannot start: bad settings")
print(f"starting {os.getpid()}", flush=True)
time.sleep(0.3)  # not ready at once

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Health)
print("serving", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


def server(tmp_path: Path, mode: str = "ok", **kwargs: object) -> ServerProcess:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    return ServerProcess(
        [sys.executable, script, str(port), mode],
        ready_url=f"http://127.0.0.1:{port}/health",
        label="test-server",
        **kwargs,
    )


def get(url: str) -> int:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/health")
    return conn.getresponse().status


def test_start_waits_until_ready_and_ctrl_c_stops(tmp_path: Path) -> None:
    proc = server(tmp_path).start()
    assert proc.ready_url is not None and get(proc.ready_url) == 200
    assert proc.log_text().splitlines() == [f"starting {proc.pid}", "serving"]
    assert proc.stop() == 0  # SIGINT: the server's own clean exit
    assert proc.log_text().splitlines()[-1] == "stopped"
    proc.close()


def test_restart_same_port_new_process_log_since_start(tmp_path: Path) -> None:
    proc = server(tmp_path, log=tmp_path / "logs" / "server.log").start()
    first = proc.pid
    proc.restart()
    assert proc.pid != first and proc.ready_url is not None and get(proc.ready_url) == 200
    assert proc.log_text().splitlines() == [f"starting {proc.pid}", "serving"]
    assert proc.log_text(since_start=False).count("serving") == 2
    proc.close()
    assert (tmp_path / "logs" / "server.log").read_text().count("serving") == 2  # a named log stays


def test_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    proc = server(tmp_path, "deaf", grace=0.5).start()
    assert proc.stop() == -signal.SIGKILL
    proc.close()


def test_exit_before_ready_shows_the_log(tmp_path: Path) -> None:
    proc = server(tmp_path, "crash")
    with pytest.raises(ProcessError, match=r"(?s)test-server exited with 1 before it was ready.*cannot start: bad"):
        proc.start()
    proc.close()


def test_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    port = free_port()
    proc = ServerProcess(
        [sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)"],
        ready_url=f"http://127.0.0.1:{port}/health",
        ready_timeout=1,
    )
    with pytest.raises(ProcessError, match=r"(?s)not ready within 1 s.*waiting"):
        proc.start()
    assert proc.returncode == -signal.SIGKILL
    proc.close()


def test_ready_line_and_a_failure_inside_gets_the_log(tmp_path: Path) -> None:
    proc = server(tmp_path, ready_line="serving")
    proc.ready_url = None  # the line alone says ready
    with pytest.raises(AssertionError) as failed, proc:
        assert "serving" in proc.log_text()
        raise AssertionError("a test's own failure")
    assert any("serving" in note for note in failed.value.__notes__)
    assert not proc.running()


def test_free_port_binds_and_children_import_this_checkout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
    env = child_env({"PYTHONPATH": "/extra", "X": "1"}, Y="2")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(CODE_ROOT), "/extra"] and env["X"] == "1" and env["Y"] == "2"
    with ServerProcess.module("serve", "--version", ready_line="hearth-serve") as proc:
        assert proc.proc is not None and proc.proc.wait(60) == 0
        assert proc.log_text().strip() == version_line("hearth-serve")
