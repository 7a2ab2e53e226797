#!/usr/bin/python3
"""The compile cache: a C++ hello world submitted twice to a real server (the catalog's C++
runtime), the latency of the first submission (compiled) against the second (served from the
cache), measured in the same run. Each round's program differs by a comment, so its first
submission is a miss. Goal: the cached submission at most 0.2x the first.
  ROUNDS=N (default 5)"""
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server  # noqa: E402

HELLO = '#include <iostream>\n// round %d %f\nint main() { std::cout << "hello\\n"; }\n'


def timed(s, rid, src):
    t = time.monotonic()
    r = s.execute(rid, src)
    dt = time.monotonic() - t
    j = r.json()
    assert r.status_code == 200 and j["run"]["stdout"] == "hello\n", r.text
    return dt, j["compile"]["cached"]


def main():
    rounds = int(os.environ.get("ROUNDS", "5"))
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2).start()
    try:
        rid = s.runtimes()["C++"]
        first, cached = [], []
        print(f"{'round':>5} {'first s':>9} {'cached s':>9} {'ratio':>7}")
        for i in range(rounds):
            src = HELLO % (i, time.time())
            a, hit_a = timed(s, rid, src)
            b, hit_b = timed(s, rid, src)
            assert not hit_a and hit_b, (hit_a, hit_b)
            first.append(a)
            cached.append(b)
            print(f"{i:5d} {a:9.4f} {b:9.4f} {b / a:7.3f}")
        fm, cm = statistics.median(first), statistics.median(cached)
        print(f"\nmedian: first {fm:.4f} s, cached {cm:.4f} s, ratio {cm / fm:.3f} "
              f"(goal <= 0.2)")
    finally:
        s.stop()
        shutil.rmtree(s.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
