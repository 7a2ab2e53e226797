"""Graceful shutdown on SIGTERM: no new connection is accepted, what waits is answered 503,
what runs finishes and is answered within SHUTDOWN_TIMEOUT; past it, it is killed and the
server exits leaving nothing behind."""
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN, Server, wait_no_residue


def gauge(s, name):
    for line in s.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name + " not in /metrics")


def wait_for(cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition never held"
        time.sleep(0.02)


def in_thread(fn):
    out = {}

    def run():
        try:
            out["r"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["e"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def refused(port):
    # Refused, or reset: a connection that reached the listening socket's queue as the server
    # closed it is reset by the kernel, not served; either way the server took no new one.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def test_running_work_finishes_waiting_work_is_refused_new_connections_are_refused():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, SHUTDOWN_TIMEOUT=60).start()
    try:
        bash = s.runtimes()["Bash"]
        running, r1 = in_thread(lambda: s.execute(bash, "sleep 3; echo finished"))
        wait_for(lambda: gauge(s, "envicutor_submissions_running") == 1)
        waiting, r2 = in_thread(lambda: s.execute(bash, "echo never"))
        wait_for(lambda: gauge(s, "envicutor_queue_waiting") == 1)
    except BaseException:
        s.stop()
        raise
    s.proc.send_signal(signal.SIGTERM)
    # refused while the running submission still runs: the server stopped accepting first
    wait_for(lambda: refused(s.port), timeout=10)
    assert running.is_alive()
    running.join(60)
    waiting.join(60)
    assert "e" not in r1, r1
    assert r1["r"].status_code == 200, r1["r"].text
    assert r1["r"].json()["run"]["stdout"] == "finished\n"
    assert r2["r"].status_code == 503, r2["r"].text
    assert s.proc.wait(timeout=30) == 0
    s.log.close()
    assert "killing" not in s.log_text()
    assert wait_no_residue() == ([], [], [])


def test_work_past_the_deadline_is_killed_and_nothing_is_left():
    s = Server(SHUTDOWN_TIMEOUT=1).start()
    try:
        bash = s.runtimes()["Bash"]
        t, r = in_thread(lambda: s.execute(bash, "sleep 50"))
        wait_for(lambda: gauge(s, "envicutor_submissions_running") == 1)
    except BaseException:
        s.stop()
        raise
    s.proc.send_signal(signal.SIGTERM)
    # far below the run's 50 seconds: it was killed at the one-second deadline
    assert s.proc.wait(timeout=30) == 0
    s.log.close()
    t.join(30)
    assert "r" not in r or r["r"].status_code == 503, r
    assert "work still running after SHUTDOWN_TIMEOUT (1 s); killing it" in s.log_text()
    assert wait_no_residue() == ([], [], [])


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "3601", ""])
def test_a_bad_shutdown_timeout_stops_the_start(value):
    p = subprocess.run([BIN, "serve"], env={"SHUTDOWN_TIMEOUT": value,
                                            "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    assert "SHUTDOWN_TIMEOUT" in p.stderr.decode()
