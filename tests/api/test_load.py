"""SPEC §5 under load: thousands of connections in libmicrohttpd's epoll mode (no select()
bound of 1 024), a thousand submissions at once with the default queue bounds, silent clients
timed out without holding a submission's turn, and the queue bounded by the bytes its requests
hold."""
import json
import resource
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, Server, box_processes

N_IDLE = 5000
N_PARALLEL = 1000


@pytest.fixture(scope="module", autouse=True)
def many_descriptors():
    """The test opens thousands of sockets: up to its hard descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < N_IDLE + 500:
        pytest.skip(f"the descriptor hard limit ({hard}) is below {N_IDLE + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(port, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_response(sock):
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers: %r" % buf)
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(l.split(":", 1)[1]) for l in lines[1:]
                  if l.lower().startswith("content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status, body


def request_bytes(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def accept_queue(port):
    """Connections the kernel has completed on our listening socket that the server has not
    accepted yet (rx_queue of a LISTEN socket in /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return int(queues.split(":")[1], 16)
    return 0


def wait_accepted(port, guard=60):
    deadline = time.time() + guard
    while accept_queue(port) > 0:
        assert time.time() < deadline, "the server stopped accepting connections"
        time.sleep(0.01)


def test_thousands_of_idle_connections_leave_the_server_answering():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2).start()
    idle = []
    try:
        # Opened in batches well under the kernel's accept queue (somaxconn, 4096 here), each
        # accepted before the next: a connection the kernel completed into a full queue is
        # dropped and retried with growing back-off, which would say nothing of the server.
        for i in range(N_IDLE):
            idle.append(connect(s.port))
            if i % 500 == 499:
                wait_accepted(s.port)
        wait_accepted(s.port)
        # the 5 000 are open (none has been closed: the server holds them all) and a new
        # client is answered at once
        r = s.get("/health", timeout=10)
        assert r.status_code == 200 and r.text == "Up and running"
        # every idle connection is a working one
        for c in idle:
            c.sendall(request_bytes("GET", "/health"))
        for c in idle:
            assert read_response(c) == (200, b"Up and running")
        log = s.log_text()
        assert "FD_SETSIZE" not in log
    finally:
        for c in idle:
            c.close()
        assert s.stop() == 0, s.log_text()


def test_a_thousand_submissions_at_once_with_the_default_settings():
    s = Server().start()  # no MAX_QUEUE_SIZE, no other bound set
    try:
        py = s.runtimes()["Python 3"]
        req = request_bytes("POST", "/execute", {"runtime_id": py,
                                                  "source_code": "print(input())",
                                                  "input": "Hello world"})
        socks = [connect(s.port, timeout=300) for _ in range(N_PARALLEL)]
        # all sent before any answer is read: they wait in the queue together
        for c in socks:
            c.sendall(req)
        results = [None] * N_PARALLEL

        def reader(lo, hi):
            for i in range(lo, hi):
                try:
                    results[i] = read_response(socks[i])
                except Exception as e:  # noqa: BLE001 - reported below
                    results[i] = e

        step = N_PARALLEL // 8
        threads = [threading.Thread(target=reader, args=(i, i + step))
                   for i in range(0, N_PARALLEL, step)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = [r for r in results
               if not (isinstance(r, tuple) and r[0] == 200 and
                       json.loads(r[1])["run"]["stdout"] == "Hello world\n")]
        assert not bad, (len(bad), bad[:3])
        for c in socks:
            c.close()
    finally:
        assert s.stop() == 0, s.log_text()


def test_silent_clients_are_timed_out_without_holding_a_turn():
    # one submission at a time and no waiting at all: a submission that could not start at
    # once would get 503
    s = Server(CONNECTION_TIMEOUT=2, MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUE_SIZE=0).start()
    silent = []
    try:
        silent = [connect(s.port) for _ in range(200)]
        r = s.execute(s.runtimes()["Bash"], "echo ran")
        assert r.status_code == 200 and r.json()["run"]["stdout"] == "ran\n", r.text
        # each silent connection is closed by the server (recv sees the end, or a reset)
        for c in silent:
            try:
                assert c.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for c in silent:
            c.close()
        assert s.stop() == 0, s.log_text()


def test_the_queue_is_bounded_by_the_bytes_it_holds():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUE_MEMORY=1000).start()
    try:
        bash = s.runtimes()["Bash"]
        running = connect(s.port, timeout=60)
        running.sendall(request_bytes("POST", "/execute", {"runtime_id": bash,
                                                           "source_code": "sleep 300"}))
        # it holds the one turn once its program runs
        deadline = time.time() + 60
        while not box_processes():
            assert time.time() < deadline, "the first submission never started"
            time.sleep(0.05)
        # a body larger than the bytes the queue may hold is refused at once
        r = s.execute(bash, "#" + "x" * 1200 + "\necho big", timeout=60)
        assert r.status_code == 503 and "queue" in r.json()["message"], r.text
        # one that fits waits for its turn
        small = connect(s.port, timeout=60)
        small.sendall(request_bytes("POST", "/execute", {"runtime_id": bash,
                                                         "source_code": "echo s"}))
        running.close()  # the client goes away: its run is killed, the queue moves on
        status, body = read_response(small)
        assert status == 200 and json.loads(body)["run"]["stdout"] == "s\n"
        small.close()
    finally:
        assert s.stop() == 0, s.log_text()


@pytest.mark.parametrize("var,value", [
    ("MAX_QUEUE_MEMORY", "-1"), ("MAX_QUEUE_MEMORY", "lots"), ("MAX_QUEUE_MEMORY", "1e9"),
    ("MAX_QUEUE_MEMORY", str(2**40 + 1)), ("MAX_QUEUE_SPILLED", ""),
    ("MAX_QUEUE_SPILLED", "12 GB"), ("MAX_QUEUE_SPILLED", str(2**44 + 1)),
    ("MAX_QUEUE_SIZE", "-1"), ("MAX_QUEUE_SIZE", str(2**32)),
])
def test_bad_queue_bounds_stop_the_start(var, value):
    p = subprocess.run([BIN, "serve"], env={var: value, "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode == 2
    assert var in p.stderr.decode()


def test_help_names_the_queue_bounds():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0
    for var in (b"MAX_QUEUE_MEMORY", b"MAX_QUEUE_SPILLED", b"MAX_QUEUE_SIZE"):
        assert var in p.stdout
