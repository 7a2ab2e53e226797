#!/usr/bin/python3
"""POST /runtimes of a Nix runtime (a shell with two store builds, offline, as in the API tests)
through two servers side by side, in alternating rounds: BASELINE (an envicutor binary given
on the command line, e.g. an older build) and this tree's build/envicutor. Prints the median
and spread of each, and the ratio. Each install builds new store paths (a new nonce each).

    bench/nix_install.py BASELINE_BINARY [ROUNDS]     (as root, Nix installed)
"""
import os
import statistics
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
from conftest import Server  # noqa: E402

NIX_CONFIG = "substituters =\nconnect-timeout = 2\nextra-sandbox-paths = /bin /usr /lib /lib64"


def shell(nonce):
    with open(os.path.join(ROOT, "tests", "fixtures", "nix", "greet.nix")) as f:
        return f.read().replace("@NONCE@", nonce).replace("@VERSION@", "1.0")


def install(server, i):
    body = {"name": f"bench-{i}-{uuid.uuid4().hex[:6]}", "nix_shell": shell(uuid.uuid4().hex[:10]),
            "compile_script": "", "run_script": "greet", "source_file_name": "main.sh"}
    t0 = time.monotonic()
    r = server.post("/runtimes", body)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return took


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    servers = {
        "baseline": Server(NIX_CONFIG=NIX_CONFIG),
        "this tree": Server(NIX_CONFIG=NIX_CONFIG),
    }
    servers["baseline"].binary = sys.argv[1]
    times = {k: [] for k in servers}
    first = {}
    try:
        for name, s in servers.items():
            s.start()
        for i in range(rounds):
            for name, s in (servers.items() if i % 2 == 0 else reversed(servers.items())):
                t = install(s, i)
                if name not in first:
                    first[name] = t
                else:
                    times[name].append(t)
    finally:
        for s in servers.values():
            s.stop()
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"{name:10s} first install {first[name] * 1000:7.1f} ms; then median "
              f"{statistics.median(ts) * 1000:7.1f} ms (p10 {q[0] * 1000:.1f}, p90 {q[-1] * 1000:.1f}, "
              f"n={len(ts)})")
    print(f"ratio this tree / baseline (medians): "
          f"{statistics.median(times['this tree']) / statistics.median(times['baseline']):.2f}")


if __name__ == "__main__":
    main()
