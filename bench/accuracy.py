#!/usr/bin/python3
"""Accuracy of the sandbox's metrics against known truths, measured in the same run:
- CPU time: tests/sandbox/progs/burn measures its own CPU (its threads' clocks plus its
  children's rusage); the sandbox's cpu_time should be within 5 ms or 2 % of it.
- Peak memory: touch_mem writes every page of N MiB; the sandbox's memory should be within
  5 % + 1 MiB of N MiB.
Prints one row per case, and the worst deviation."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "envicutor")
PROGS = os.path.join(ROOT, "build", "progs")


def run(*cmd, opts=()):
    p = subprocess.run([BIN, "sandbox", "--mount", PROGS + ":/opt/progs", *opts, "--", *cmd],
                       capture_output=True, check=True)
    return json.loads(p.stdout)


def main():
    rounds = int(os.environ.get("ROUNDS", "3"))
    print(f"{'case':34} {'own s':>9} {'sandbox s':>10} {'diff ms':>8} {'allowed ms':>10}")
    worst_cpu = 0.0
    for secs, threads, children in ((0.1, 1, 0), (0.5, 1, 0), (0.2, 4, 0), (0.2, 2, 2),
                                    (1.0, 2, 0)):
        for _ in range(rounds):
            r = run("/opt/progs/burn", str(secs), str(threads), str(children),
                    opts=["--cpu-time", "30"])
            own = float(r["stdout"])
            diff = (r["cpu_time"] - own) * 1000
            allowed = max(5.0, own * 20)
            worst_cpu = max(worst_cpu, abs(diff) / allowed)
            print(f"burn {secs}s x{threads} threads x{children + 1} procs".ljust(34),
                  f"{own:9.4f} {r['cpu_time']:10.4f} {diff:8.2f} {allowed:10.1f}")
    print(f"\n{'case':34} {'touched KB':>10} {'peak KB':>10} {'diff KB':>8} {'allowed KB':>10}")
    worst_mem = 0.0
    for mb in (1, 16, 64, 256):
        for _ in range(rounds):
            r = run("/opt/progs/touch_mem", str(mb), opts=["--memory", "1000000"])
            kb = mb * 1024
            diff = r["memory"] - kb
            allowed = kb * 0.05 + 1024
            worst_mem = max(worst_mem, abs(diff) / allowed)
            print(f"touch_mem {mb} MiB".ljust(34), f"{kb:10d} {r['memory']:10d} {diff:8d} "
                  f"{allowed:10.0f}")
    print(f"\nworst CPU deviation: {worst_cpu:.2f} of the allowance; "
          f"worst memory deviation: {worst_mem:.2f} of the allowance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
