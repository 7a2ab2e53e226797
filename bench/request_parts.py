#!/usr/bin/python3
"""Where the milliseconds of one /execute request go: Python `print(input())` submitted to a real
server one request at a time (no concurrency, so each figure is one request's own), interleaved
round by round with the parts measured alone, medians:
  HTTP                   GET /health on a kept-alive connection: the HTTP round trip
  + JSON and checks      POST /execute of an unknown runtime id: body, JSON parse, validation
  box set-up             the server's envicutor_box_setup_seconds (helper round trip, tmpfs)
  run stage              the server's envicutor_stage_duration_seconds{stage="run"} (helper
                         round trip with the files and stdin, the sandbox, the program)
  program in the box     the run's own wall_time (from its execve to its end)
  program bare           fork + exec of `python3 main.py` with the same stdin, here
  rest                   the whole request less the above: writing the source into the box,
                         closing the box, the reply's JSON
  ROUNDS=N (default 100)"""
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server  # noqa: E402


def metric(text, name, labels=""):
    """The _sum and _count of a histogram, from GET /metrics."""
    out = []
    for suffix in ("_sum", "_count"):
        key = name + suffix + ("{" + labels + "}" if labels else "")
        line = next(ln for ln in text.splitlines() if ln.split(" ")[0] == key)
        out.append(float(line.split(" ")[1]))
    return out


def main():
    rounds = int(os.environ.get("ROUNDS", "100"))
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1).start()
    work = tempfile.mkdtemp(prefix="envicutor-bench-")
    try:
        py = s.runtimes()["Python 3"]
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        hdr = {"Content-Type": "application/json"}
        good = json.dumps({"runtime_id": py, "source_code": "print(input())", "input": "hello"})
        bad = json.dumps({"runtime_id": 999999, "source_code": "print(input())", "input": "x"})
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write("print(input())\n")

        def req(method, path, body=None):
            t = time.monotonic()
            conn.request(method, path, body=body, headers=hdr if body else {})
            r = conn.getresponse()
            data = r.read()
            return (time.monotonic() - t) * 1e3, r.status, data

        def bare():
            t = time.monotonic()
            subprocess.run(["/usr/bin/python3", "main.py"], input=b"hello\n", cwd=work,
                           stdout=subprocess.DEVNULL, check=True)
            return (time.monotonic() - t) * 1e3

        # warm-up: the page cache, and a prepared root for each box a search starts at
        # (sandbox/box.c: the first ROOTS_MAX boxes)
        for _ in range(int(os.environ.get("WARMUP", "70"))):
            req("POST", "/execute", good)
        m0 = req("GET", "/metrics")[2].decode()
        health, checks, full, prog, base = [], [], [], [], []
        for _ in range(rounds):
            health.append(req("GET", "/health")[0])
            ms, st, _ = req("POST", "/execute", bad)
            assert st in (400, 404), st
            checks.append(ms)
            ms, st, data = req("POST", "/execute", good)
            j = json.loads(data)
            assert st == 200 and j["run"]["stdout"] == "hello\n", data
            full.append(ms)
            prog.append(j["run"]["wall_time"] * 1e3)
            base.append(bare())
        m1 = req("GET", "/metrics")[2].decode()
        conn.close()
        n = rounds

        def mean_ms(name, labels=""):
            (s0, c0), (s1, c1) = metric(m0, name, labels), metric(m1, name, labels)
            assert c1 - c0 == n, (name, c1 - c0)
            return (s1 - s0) / n * 1e3

        med = statistics.median
        box = mean_ms("envicutor_box_setup_seconds")
        run = mean_ms("envicutor_stage_duration_seconds", 'stage="run"')
        rows = [
            ("whole request (client's view)", med(full)),
            ("HTTP round trip (GET /health)", med(health)),
            ("JSON parse and checks (400 less HTTP)", med(checks) - med(health)),
            ("box set-up (helper, mean)", box),
            ("run stage (helper, mean)", run),
            ("  of which the program in the box", med(prog)),
            ("  of which the sandbox and helper", run - med(prog)),
            ("rest: files into the box, close, reply", med(full) - med(checks) - box - run),
            ("program bare (fork+exec python3)", med(base)),
        ]
        print(f"{'part':<42} {'ms':>8}")
        for name, v in rows:
            print(f"{name:<42} {v:8.3f}")
        print(f"request / bare program: {med(full) / med(base):.2f}x ({n} rounds, interleaved)")
    finally:
        s.stop()
        shutil.rmtree(s.data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
