#!/usr/bin/python3
"""GET /execute/ws on a real server (the catalog's Python 3 runtime):

- memory of the server per open WebSocket: RSS of the server process (the one that listens)
  before and after N sessions wait in the queue behind a session that holds the only turn,
  divided by N, next to the same for N /execute requests waiting behind it (the goal: a
  waiting WebSocket costs no more than a waiting request); then per session for M sessions
  each running an interactive program;
- the latency of one echo round trip through the WebSocket (a `data` line in, the program's
  echoed line out) next to the same program started directly with pipes (subprocess), the two
  interleaved round by round in the same run: medians, p99 and their ratios.

  N=200 waiting sessions, M=8 running ones, ROUNDS=200 round trips (environment variables)."""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

import websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server  # noqa: E402

# a `cat` that answers line by line: nothing is held in a buffer
ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def listener_pid(port):
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


def settle(pid):
    """RSS once it stops moving."""
    last = -1
    for _ in range(100):
        now = rss_kb(pid)
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


def recv_json(ws):
    return json.loads(ws.recv())


def open_session(s, source, want):
    """A session sent init; returns it once a message of type `want` came."""
    ws = websocket.create_connection(s.url.replace("http://", "ws://") + "/execute/ws",
                                     timeout=60)
    ws.send(json.dumps({"type": "init", "runtime_id": s.runtimes()["Python 3"],
                        "source_code": source, "run_limits": {"wall_time": 60}}))
    while True:
        m = recv_json(ws)
        assert m["type"] in ("queued", "ready", "stage"), m
        if m["type"] == want:
            return ws


def running_echo(s):
    ws = open_session(s, ECHO, "ready")
    assert recv_json(ws) == {"type": "stage", "stage": "run"}
    return ws


def waiting_execute(s, n):
    """n /execute requests of the same program, sent on raw sockets, left waiting."""
    data = json.dumps({"runtime_id": s.runtimes()["Python 3"], "source_code": "print(1)",
                       "run_limits": {"wall_time": 60}}).encode()
    req = (b"POST /execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(data)) + data
    socks = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(n)]
    for c in socks:
        c.sendall(req)
    return socks


def waiting_cost(n, kind):
    """KB of the server's RSS per waiting WebSocket or /execute request, on a fresh server
    (a heap that grew for one kind would be reused by the other)."""
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1).start()
    socks = []
    try:
        pid = listener_pid(s.port)
        holder = running_echo(s)
        before = settle(pid)
        if kind == "ws":
            socks = [open_session(s, "print(1)", "queued") for _ in range(n)]
        else:
            socks = waiting_execute(s, n)
        after = settle(pid)
        holder.close()
        return before, after, (after - before) / n
    finally:
        for c in socks:
            c.close()
        stop(s)


def memory(n, m):
    """Per waiting WebSocket and per waiting /execute of the same program (connection
    included), each behind a session that holds the only turn."""
    ws = waiting_cost(n, "ws")
    print(f"{n} WebSockets waiting in the queue: server RSS {ws[0]} KB -> {ws[1]} KB, "
          f"{ws[2]:.2f} KB per waiting WebSocket")
    http = waiting_cost(n, "http")
    print(f"{n} /execute requests waiting in the queue: server RSS {http[0]} KB -> {http[1]} KB, "
          f"{http[2]:.2f} KB per waiting request (connection included)")
    if http[2] > 0:
        print(f"waiting WebSocket / waiting request: {ws[2] / http[2]:.2f} (goal: at most 1)")
    s = Server(MAX_CONCURRENT_SUBMISSIONS=m).start()
    try:
        pid = listener_pid(s.port)
        running_echo(s).close()  # the first run's one-time costs (threads' arenas, caches)
        time.sleep(1)
        before = settle(pid)
        socks = [running_echo(s) for _ in range(m)]
        after = settle(pid)
        print(f"{m} WebSockets each running an interactive program: server RSS {before} KB -> "
              f"{after} KB, {(after - before) / m:.1f} KB per running WebSocket")
    finally:
        for ws in socks:
            ws.close()
        stop(s)


def stop(s):
    s.stop()
    shutil.rmtree(s.data_dir, ignore_errors=True)


def p99(xs):
    return statistics.quantiles(xs, n=100)[98]


def latency(rounds):
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1).start()
    bare = subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, bufsize=0)
    try:
        ws = running_echo(s)

        def through_ws(line):
            t = time.perf_counter()
            ws.send(json.dumps({"type": "data", "stream": "stdin", "data": line}))
            got = ""
            while not got.endswith("\n"):
                m = recv_json(ws)
                assert m["type"] == "data" and m["stream"] == "stdout", m
                got += m["data"]
            dt = time.perf_counter() - t
            assert got == line, (got, line)
            return dt

        def through_pipe(line):
            data = line.encode()
            t = time.perf_counter()
            bare.stdin.write(data)
            got = b""
            while not got.endswith(b"\n"):
                got += bare.stdout.read(len(data) - len(got))
            dt = time.perf_counter() - t
            assert got == data, (got, data)
            return dt

        for i in range(20):  # warm-up: both programs have run their loop once
            through_ws(f"warm {i}\n")
            through_pipe(f"warm {i}\n")
        w, p = [], []
        for i in range(rounds):
            line = f"round {i} of the echo\n"
            w.append(through_ws(line))
            p.append(through_pipe(line))
        ws.send(json.dumps({"type": "eof"}))
        ws.close()
        us = 1e6
        wm, pm = statistics.median(w) * us, statistics.median(p) * us
        w99, p99_ = p99(w) * us, p99(p) * us
        print(f"echo round trip, {rounds} rounds interleaved (microseconds):")
        print(f"  {'':24} {'median':>9} {'p99':>9}")
        print(f"  {'WebSocket (server, box)':24} {wm:9.0f} {w99:9.0f}")
        print(f"  {'bare pipe (subprocess)':24} {pm:9.0f} {p99_:9.0f}")
        print(f"  {'ratio':24} {wm / pm:9.2f} {w99 / p99_:9.2f}")
    finally:
        bare.stdin.close()
        bare.wait(timeout=10)
        stop(s)


def main():
    memory(int(os.environ.get("N", "200")), int(os.environ.get("M", "8")))
    latency(int(os.environ.get("ROUNDS", "200")))


if __name__ == "__main__":
    main()
