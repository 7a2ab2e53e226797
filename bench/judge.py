#!/usr/bin/python3
"""Judge mode's throughput: one POST /execute with N tests of Python `print(input())` against
the baseline of N bare runs of the same program (fork + exec + wait of `python3 main.py`, one
after another, as the tests of one request run), and against N plain /execute requests sent one
after another, measured in the same run in alternating rounds. Prints each round's tests per
second and the medians' ratios (goal: judge mode >= 0.85x bare).

    bench/judge.py [TESTS] [ROUNDS]     (as root, from the repository's root; defaults 100, 5)
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server  # noqa: E402

SRC = "print(input())\n"


def bare(n, work):
    t0 = time.monotonic()
    for i in range(n):
        out = subprocess.run(["/usr/bin/python3", "main.py"], input=b"line %d\n" % i, cwd=work,
                             stdout=subprocess.PIPE, check=True).stdout
        assert out == b"line %d\n" % i
    return n / (time.monotonic() - t0)


def judged(server, py, n):
    tests = [{"input": "line %d" % i, "expected_output": "line %d" % i} for i in range(n)]
    t0 = time.monotonic()
    r = server.post("/execute", {"runtime_id": py, "source_code": SRC, "tests": tests},
                    timeout=600)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "AC", r.text[:500]
    return n / took


def plain(server, py, n):
    t0 = time.monotonic()
    for i in range(n):
        r = server.post("/execute", {"runtime_id": py, "source_code": SRC, "input": "line %d" % i})
        assert r.status_code == 200 and r.json()["run"]["stdout"] == "line %d\n" % i, r.text
    return n / (time.monotonic() - t0)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = tempfile.mkdtemp(prefix="envicutor-bench-judge-")
    with open(os.path.join(work, "main.py"), "w") as f:
        f.write(SRC)
    server = Server(MAX_CONCURRENT_SUBMISSIONS=1).start()
    try:
        py = server.runtimes()["Python 3"]
        judged(server, py, 5)  # warm-up
        figures = {"bare": [], "judge": [], "plain": []}
        for r in range(rounds):
            figures["bare"].append(bare(n, work))
            figures["judge"].append(judged(server, py, n))
            figures["plain"].append(plain(server, py, n))
            print("round %d/%d: bare %.1f runs/s, judge mode %.1f tests/s, plain /execute "
                  "%.1f requests/s" % (r + 1, rounds, figures["bare"][-1], figures["judge"][-1],
                                       figures["plain"][-1]), flush=True)
        med = {k: statistics.median(v) for k, v in figures.items()}
        print("medians: bare %.1f/s, judge mode %.1f/s, plain /execute %.1f/s" %
              (med["bare"], med["judge"], med["plain"]))
        print("judge mode / bare = %.2fx (goal >= 0.85x); judge mode / plain /execute = %.2fx" %
              (med["judge"] / med["bare"], med["judge"] / med["plain"]))
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
