#!/usr/bin/python3
"""The cluster's throughput: one API node, a real redis-server, and 1 then 2 workers of one slot
each on this machine, in alternating rounds. Each round submits JOBS CPU-bound jobs at once (a
shell loop of about a third of a second) and counts jobs per second; the ratio of the medians is
the figure (goal: 2 workers >= 1.8x 1 worker on 2 cores). Also prints what Redis saw per job:
commands (INFO commandstats) and bytes in and out (INFO stats), and what idle workers cost.

    bench/cluster.py [JOBS] [ROUNDS]    (as root, from the repository's root; defaults 12, 3)
"""
import os
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server, wait_no_residue  # noqa: E402
from test_cluster import RUNTIME_ID, Redis, Worker, install_runtime  # noqa: E402

BUSY = "i=0; while [ $i -lt 250000 ]; do i=$((i+1)); done; echo $i"


def redis_counters(redis):
    calls, inb, outb = 0, 0, 0
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            calls += int(line.split("calls=")[1].split(",")[0])
    for line in redis.cli("INFO", "stats").splitlines():
        if line.startswith("total_net_input_bytes:"):
            inb = int(line.split(":")[1])
        if line.startswith("total_net_output_bytes:"):
            outb = int(line.split(":")[1])
    return calls, inb, outb


def burst(api, n):
    out = [None] * n

    def go(i):
        out[i] = api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": BUSY},
                          timeout=600)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    bad = [r.text for r in out if r.status_code != 200 or r.json()["run"]["stdout"] != "250000\n"]
    assert not bad, bad[:1]
    return n / dt


def main():
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    catalog = tempfile.mkdtemp(prefix="envicutor-empty-catalog-")
    redis = Redis().start()
    api_dir = tempfile.mkdtemp(prefix="envicutor-api-node-", dir="/tmp")
    install_runtime(api_dir, catalog)
    api = Server(data_dir=api_dir, REDIS_URL=redis.url, ENVICUTOR_CATALOG=catalog).start()
    ws = [Worker(redis, catalog, 1) for _ in range(2)]
    one, two = [], []
    per_job = None
    try:
        ws[0].start()
        burst(api, 2)  # warm-up
        for r in range(rounds):
            one.append(burst(api, jobs))
            ws[1].start()
            c0 = redis_counters(redis)
            t0 = time.monotonic()
            two.append(burst(api, jobs))
            dt = time.monotonic() - t0
            c1 = redis_counters(redis)
            # idle cost over the same span, to take out of the per-job figures
            i0 = redis_counters(redis)
            time.sleep(dt)
            i1 = redis_counters(redis)
            per_job = [((c1[k] - c0[k]) - (i1[k] - i0[k])) / jobs for k in range(3)]
            idle_ops = (i1[0] - i0[0]) / dt
            ws[1].stop()
            print(f"round {r + 1}: 1 worker {one[-1]:.2f} jobs/s, 2 workers {two[-1]:.2f} jobs/s")
        m1, m2 = statistics.median(one), statistics.median(two)
        print(f"median: 1 worker {m1:.2f} jobs/s, 2 workers {m2:.2f} jobs/s: {m2 / m1:.2f}x "
              f"(goal >= 1.8x)")
        print(f"Redis per job (last round, idle traffic taken out): {per_job[0]:.1f} commands, "
              f"{per_job[1]:.0f} bytes in, {per_job[2]:.0f} bytes out; idle: {idle_ops:.1f} "
              f"commands/s for 1 API node and 2 workers")
    finally:
        for w in ws:
            w.stop()
        api.stop()
        redis.cleanup()
        left = wait_no_residue()
        assert left == ([], [], []), left


if __name__ == "__main__":
    main()
