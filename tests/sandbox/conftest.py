"""Helpers for the sandbox tests: they drive the real `envicutor sandbox` binary, as root,
with real programs under real limits."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ENVICUTOR_BIN", os.path.join(ROOT, "build", "envicutor"))
PROGS = os.environ.get("ENVICUTOR_PROGS", os.path.join(ROOT, "build", "progs"))
RUN_DIR = os.environ.get("ENVICUTOR_RUN_DIR", "/run/envicutor")
FIRST_UID, N_BOXES = 60000, 1000
# Bounds on time that depend on the machine's speed (a program's own start-up or exit cost,
# never a limit the sandbox enforces) go through slack(): `make test-cgroup2` runs this suite in
# a VM under software emulation, 10-70x slower, and sets ENVICUTOR_TIME_SCALE there.
TIME_SCALE = float(os.environ.get("ENVICUTOR_TIME_SCALE", "1"))


def slack(seconds):
    return seconds * TIME_SCALE


def sandbox(*cmd, opts=(), check=True, timeout=60):
    """Runs cmd in a box with the test programs mounted at /opt/progs; returns the parsed
    StageResult (or the CompletedProcess when check is False)."""
    argv = [BIN, "sandbox", "--mount", PROGS + ":/opt/progs", *opts, "--", *cmd]
    p = subprocess.run(argv, capture_output=True, timeout=timeout)
    if not check:
        return p
    assert p.returncode == 0, f"sandbox failed ({p.returncode}): {p.stderr.decode()}"
    return json.loads(p.stdout)


def prog(name):
    return "/opt/progs/" + name


def box_processes():
    """Processes on the host that run as a box uid."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            uid = os.stat("/proc/" + pid).st_uid
        except FileNotFoundError:
            continue
        if FIRST_UID <= uid < FIRST_UID + N_BOXES:
            out.append((int(pid), uid))
    return out


def box_cgroups():
    """Run cgroups (box-N) left in any of our subtrees: envicutor/ under the v2 hierarchy
    (/sys/fs/cgroup itself on a v2-only host, /sys/fs/cgroup/unified on a hybrid one) or under
    a v1 hierarchy (/sys/fs/cgroup/memory, ...)."""
    found = []
    for base, _, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base).startswith("box-") and "/envicutor/" in base:
            found.append(base)
    return found


def box_mounts():
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if RUN_DIR + "/boxes" in l or RUN_DIR + "/root" in l]


def box_dirs():
    d = os.path.join(RUN_DIR, "boxes")
    return os.listdir(d) if os.path.isdir(d) else []


@pytest.fixture
def no_residue():
    """Fails the test if anything of a box is left after it."""
    yield
    assert box_processes() == []
    assert box_cgroups() == []
    assert box_mounts() == []
    assert box_dirs() == []
