"""A submission is checked and run against one and the same runtime: a request that waits in the
queue while its runtime is deleted and another is installed under the same id (ids can be
chosen in POST /runtimes) must not run the new runtime under limits checked against the old.

Nothing here waits for time to pass. The queue's state is learnt from the server's own
answers: one submission holds the only place to run until the test kills its program; the queue is bounded, so a request answered 503 at once proves the queue
full; a client that hangs up leaves the queue, which the server logs."""
import os
import select
import signal
import socket
import json

import pytest

from conftest import Server

GUARD = 60  # seconds; only reached when the server never answers (a failure, not a wait)
QUEUE = 3


class Pending:
    """One HTTP request on a socket of its own, sent at once, answered whenever."""

    def __init__(self, port, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                          f"\r\n".encode() + data)
        self.what = f"{method} {path} {body}"

    def answer(self):
        """(status, JSON body), reading until the server closes."""
        buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        self.sock.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), (self.what, buf)
        return int(head.split()[1]), json.loads(body) if body else None

    def hang_up(self):
        self.sock.close()


def first_answered(pending):
    """The first of pending the server answers (readable: the server only writes its answer)."""
    ready, _, _ = select.select([p.sock for p in pending], [], [], GUARD)
    assert ready, "no answer from the server"
    return next(p for p in pending if p.sock is ready[0])


def aborts(srv):
    return srv.log_text().count(" aborted by the client ")


def hang_up_and_wait(srv, p):
    """The client of a queued request goes away; the server withdraws it and then logs it."""
    n = aborts(srv)
    p.hang_up()
    deadline_polls = GUARD * 100
    while aborts(srv) == n:
        deadline_polls -= 1
        assert deadline_polls > 0, "the server did not notice a client that went away"
        select.select([], [], [], 0.01)


class Queue:
    """The waiting requests, as far as the test knows them: fillers it can withdraw, and the
    requests it put behind them."""

    def __init__(self, srv, filler_body):
        self.srv, self.filler_body = srv, filler_body
        # QUEUE + 1 fillers at once into an empty queue behind a held run: exactly one is
        # refused, and the others wait
        fillers = [self.filler() for _ in range(QUEUE + 1)]
        refused = first_answered(fillers)
        assert refused.answer()[0] == 503
        self.fillers = [f for f in fillers if f is not refused]

    def filler(self):
        return Pending(self.srv.port, "POST", "/execute", self.filler_body)

    def put(self, method, path, body=None):
        """Makes room by withdrawing the oldest filler, then sends the request followed by a
        probe: whichever of the two is refused, the other holds the last place. Retries until
        it is the request that holds it."""
        hang_up_and_wait(self.srv, self.fillers.pop(0))
        while True:
            p = Pending(self.srv.port, method, path, body)
            probe = self.filler()
            refused = first_answered([p, probe])
            assert refused.answer()[0] == 503, refused.what
            if refused is probe:
                return p
            hang_up_and_wait(self.srv, probe)


@pytest.fixture
def one_place():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUE_SIZE=QUEUE,
               ENVICUTOR_CATALOG="/nonexistent").start()
    yield s
    assert s.stop() == 0, s.log_text()


HOLD = ["sleep", "987654"]  # a command line no other process has


def hold_pid():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:-1] == [a.encode() for a in HOLD]:
                        return int(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
    return None


def wait_until_running(held):
    """The held run's program, once it runs: it holds the only place to run until the test
    kills it. (Nothing in the box's /runtime can serve as a gate: each box sees its own
    overlay of it, FIFOs included.)"""
    for _ in range(GUARD * 100):
        pid = hold_pid()
        if pid:
            return pid
        ready, _, _ = select.select([held.sock], [], [], 0.01)
        assert not ready, held.answer()
    raise AssertionError("the held run never started")


def test_a_queued_request_never_runs_a_runtime_installed_after_its_check(one_place):
    s = one_place
    # the hold: its run sleeps until the test kills it
    hold = s.add_host_runtime("Hold", " ".join(HOLD))
    filler = s.add_host_runtime("Filler", "true")
    rid = 4242
    old = {"id": rid, "name": "Swapped", "provider": "host", "source_file_name": "main.sh",
           "run_script": "echo old runtime", "run_limits": {"wall_time": 10}}
    new = dict(old, run_script="echo new runtime", run_limits={"wall_time": 2})
    assert s.post("/runtimes", old).status_code == 200

    held = Pending(s.port, "POST", "/execute", {"runtime_id": hold, "source_code": ""})
    sleeper = wait_until_running(held)
    try:
        q = Queue(s, {"runtime_id": filler, "source_code": ""})
        delete = q.put("DELETE", f"/runtimes/{rid}")
        install = q.put("POST", "/runtimes", new)
        # checked now, against the old runtime (wall_time 5 is within its 10, not the new 2)
        submission = q.put("POST", "/execute", {"runtime_id": rid, "source_code": "",
                                                "run_limits": {"wall_time": 5}})
        assert not q.fillers
    finally:
        os.kill(sleeper, signal.SIGKILL)
    status, body = held.answer()
    assert status == 200 and body["run"]["exit_signal"] == signal.SIGKILL, body
    assert delete.answer()[0] == 200
    assert install.answer()[0] == 200
    assert s.get(f"/runtimes/{rid}").json()["run_script"] == "echo new runtime"
    # the runtime it was checked against is gone; the one under its id now was never checked
    assert submission.answer() == (400, {"message": f"Runtime with id: {rid} does not exist"})
    # a request checked against the new runtime runs it, within the new runtime's limits
    r = s.execute(rid, "", run_limits={"wall_time": 5})
    assert r.status_code == 400
    assert r.json() == {"message": "Invalid run limits: wall_time can't exceed 2 seconds"}
    r = s.execute(rid, "")
    assert r.status_code == 200 and r.json()["run"]["stdout"] == "new runtime\n", r.text
