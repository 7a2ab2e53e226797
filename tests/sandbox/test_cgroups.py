"""cgroups: the mode the sandbox detected, a fresh cgroup per run (peaks, OOM kills and CPU never
carry over), and, on a cgroup-v2-only kernel (`make test-cgroup2` runs this in a VM),
delegation from a service's own cgroup and from a cgroup shared with other processes."""
import json
import os
import platform
import subprocess

import pytest

from conftest import BIN, PROGS, box_cgroups, prog, sandbox, slack

pytestmark = pytest.mark.usefixtures("no_residue")

CG = "/sys/fs/cgroup"


def _v2_only():
    """/sys/fs/cgroup is itself a v2 hierarchy (not the tmpfs of v1 mounts) offering memory."""
    try:
        with open(CG + "/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except FileNotFoundError:
        return False


V2_ONLY = _v2_only()
v2_only = pytest.mark.skipif(not V2_ONLY, reason="needs a cgroup-v2-only host (make test-cgroup2)")


def info(preexec=None, wrap=()):
    p = subprocess.run([*wrap, BIN, "sandbox", "--info"], capture_output=True, timeout=60,
                       preexec_fn=preexec)
    assert p.returncode == 0, p.stderr.decode()
    return dict(kv.split("=", 1) for kv in json.loads(p.stdout)["cgroup"].split())


def test_detected_mode_is_reported():
    i = info()
    print("detected:", i)
    assert {i["memory"], i["pids"], i["cpu"]} <= {"v1", "v2"}
    if V2_ONLY:
        assert (i["memory"], i["pids"], i["cpu"], i["kill"]) == ("v2", "v2", "v2", "cgroup.kill")
        major, minor = (int(x) for x in platform.release().split(".")[:2])
        assert i["peak"] == ("memory.peak" if (major, minor) >= (5, 19) else "sampled")


def same_box(*cmd, opts=()):
    """Runs cmd like sandbox() but always in box 1: the command picks its first box from its
    pid, and as the first process of a new PID namespace its pid is 1. The run prints the box
    uid first, so the test knows the two runs it compares shared the box and its cgroup
    name."""
    argv = ["unshare", "--pid", "--fork", BIN, "sandbox", "--mount", PROGS + ":/opt/progs",
            *opts, "--", "sh", "-c", 'id -u; exec "$@"', "sh", *cmd]
    p = subprocess.run(argv, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(p.stdout)
    uid, _, r["stdout"] = r["stdout"].partition("\n")
    r["uid"] = int(uid)
    return r


def test_peak_memory_does_not_carry_over():
    big = same_box(prog("touch_mem"), "100", opts=["--memory", "256000"])
    assert big["exit_status"] is None, big
    assert big["memory"] >= 100 * 1024
    tiny = same_box("true")
    assert tiny["uid"] == big["uid"]
    assert tiny["memory"] < 8 * 1024


def test_oom_kill_does_not_carry_over():
    oom = same_box(prog("touch_mem"), "200", opts=["--memory", "65536"])
    assert oom["memory_limit_exceeded"] is True
    ok = same_box(prog("touch_mem"), "8", opts=["--memory", "65536"])
    assert ok["uid"] == oom["uid"]
    assert (ok["exit_status"], ok["memory_limit_exceeded"]) == (None, False)
    assert ok["memory"] < 32 * 1024


def test_cpu_time_does_not_carry_over():
    burn = same_box(prog("burn"), "2", "1", "0", opts=["--cpu-time", "5"])
    assert burn["cpu_time"] >= 1.9
    idle = same_box("true")
    assert idle["uid"] == burn["uid"]
    # sh, id and true cost a few milliseconds here, up to 0.5 s under emulation on a busy
    # host; anything carried over would be 2 s more
    assert idle["cpu_time"] < slack(0.125)


def test_process_count_does_not_carry_over():
    many = same_box(prog("spawn"), "procs", "20", opts=["--max-number-of-processes", "30"])
    assert many["stdout"].strip() == "20"
    again = same_box(prog("spawn"), "procs", "20", opts=["--max-number-of-processes", "30"])
    assert again["uid"] == many["uid"]
    assert again["stdout"].strip() == "20"


# ---- v2 delegation, as a systemd service and from a shared cgroup --------------------------

SLICE = CG + "/envicutor-test.slice"


def write(path, value):
    with open(path, "w") as f:
        f.write(value)


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def slice_():
    """A slice like systemd's: controllers handed down, no processes of its own. Removed
    afterwards, which fails if anything (a process, a run cgroup) is left in it."""
    write(CG + "/cgroup.subtree_control", "+memory +pids +cpu")
    os.makedirs(SLICE, exist_ok=True)
    write(SLICE + "/cgroup.subtree_control", "+memory +pids +cpu")
    yield SLICE
    for d, _, _ in os.walk(SLICE, topdown=False):
        assert read(d + "/cgroup.procs") == "", d
        os.rmdir(d)


def enter(cgroup):
    return lambda: write(cgroup + "/cgroup.procs", "0")


def in_cgroup(cgroup, *cmd, opts=(), shell=False):
    """Runs the sandbox command in `cgroup`: alone (as a service's main process), or with
    `shell`, as the child of a shell that stays in the cgroup (as from a login session)."""
    wrap = ["sh", "-c", '"$@"; exit $?', "sh"] if shell else []
    argv = [*wrap, BIN, "sandbox", "--mount", PROGS + ":/opt/progs", *opts, "--", *cmd]
    p = subprocess.run(argv, capture_output=True, timeout=120, preexec_fn=enter(cgroup))
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def check_limits(cgroup, shell):
    r = in_cgroup(cgroup, prog("touch_mem"), "200", opts=["--memory", "65536"], shell=shell)
    assert (r["exit_signal"], r["memory_limit_exceeded"]) == (9, True)
    r = in_cgroup(cgroup, prog("touch_mem"), "20", opts=["--memory", "65536"], shell=shell)
    assert (r["exit_status"], r["memory_limit_exceeded"]) == (None, False)
    assert 20 * 1024 <= r["memory"] < 40 * 1024
    r = in_cgroup(cgroup, prog("spawn"), "threads", "100", opts=["--max-number-of-processes",
                                                                  "10"], shell=shell)
    assert r["stdout"].strip() == "9"
    r = in_cgroup(cgroup, prog("burn"), "0.3", "1", "0", opts=["--cpu-time", "5"], shell=shell)
    # the baseline is read when the watcher sees the execve, a little after it
    assert 0.3 - slack(0.01) <= r["cpu_time"] < 0.3 + slack(0.05)
    r = in_cgroup(cgroup, prog("burn"), "5", "1", "0",
                  opts=["--cpu-time", "0.3", "--extra-time", "0"], shell=shell)
    assert r["exit_status"] == "TO"


@v2_only
def test_delegation_from_a_service_cgroup(slice_):
    """The server as a systemd service's only process: it moves into a leaf of its own and
    enables the controllers in its service's cgroup, under which its subtree lives."""
    svc = slice_ + "/envicutor.service"
    os.mkdir(svc)
    i = info(preexec=enter(svc))
    assert i["subtree"] == svc + "/envicutor"
    assert (i["memory"], i["pids"], i["cpu"]) == ("v2", "v2", "v2")
    assert set(read(svc + "/cgroup.subtree_control").split()) == {"memory", "pids", "cpu"}
    assert set(read(svc + "/envicutor/cgroup.subtree_control").split()) == {
        "memory", "pids", "cpu"}
    # The server stays in its leaf for its whole life; each command started there stands
    # for one of its runs (and goes through delegation again, from the leaf).
    leaf = svc + "/envicutor-server"
    assert os.path.isdir(leaf)
    assert info(preexec=enter(leaf))["subtree"] == svc + "/envicutor"
    check_limits(leaf, shell=False)
    assert read(svc + "/cgroup.procs") == ""
    assert box_cgroups() == []


@v2_only
def test_delegation_from_a_cgroup_shared_with_other_processes(slice_):
    """Run from a login shell's cgroup: the shell is not ours to move, so the subtree goes
    next to that cgroup, and the shared cgroup is left as it was."""
    session = slice_ + "/session-1.scope"
    os.mkdir(session)
    i = info(preexec=enter(session), wrap=["sh", "-c", '"$@"; exit $?', "sh"])
    assert i["subtree"] == slice_ + "/envicutor"
    assert (i["memory"], i["pids"], i["cpu"]) == ("v2", "v2", "v2")
    assert read(session + "/cgroup.subtree_control").strip() == ""
    assert [f for f in os.listdir(session) if os.path.isdir(os.path.join(session, f))] == []
    check_limits(session, shell=True)
    assert box_cgroups() == []


# ---- at emulation speed ------------------------------------------------------------------

at_emulation_speed = pytest.mark.skipif(slack(1) == 1,
                                        reason="test_limits.py checks this at host speed")


@at_emulation_speed
def test_wall_limit_and_set_up_cost_with_scaled_bounds():
    """What test_limits.py's clean-exit and wall-limit tests check, with bounds on the
    program's own start-up and exit cost scaled (tests/vm/host-speed-tests)."""
    r = sandbox("true")
    assert (r["exit_code"], r["exit_status"], r["exit_message"]) == (0, None, None)
    assert r["cpu_time"] < slack(0.02)
    assert r["wall_time"] < slack(0.1)
    r = sandbox("sleep", "10", opts=["--wall-time", "0.5"])
    assert r["exit_status"] == "TO"
    assert r["exit_message"] == "Time limit exceeded (wall clock)"
    assert 0.5 <= r["wall_time"] < 0.5 + slack(0.3)
    assert r["cpu_time"] < slack(0.05)


@at_emulation_speed
def test_under_wall_and_cpu_limits_with_scaled_bounds():
    r = sandbox("sleep", "0.3", opts=["--wall-time", "5"])
    assert r["exit_status"] is None
    assert 0.3 <= r["wall_time"] < 0.3 + slack(0.1)
    r = sandbox(prog("burn"), "0.3", "1", "0", opts=["--cpu-time", "1", "--extra-time", "0"])
    assert r["exit_status"] is None
    assert 0.3 - slack(0.01) <= r["cpu_time"] < 0.3 + slack(0.05)


@at_emulation_speed
def test_memory_is_for_the_whole_run_with_programs_that_hold_it():
    # each holds 40 MB (written, so charged) until both have it; 2 x 40 MB > 64 MB
    hold = "import time; b = b'x' * (40 << 20); time.sleep(5)"
    r = sandbox("sh", "-c", f"python3 -c \"{hold}\" & python3 -c \"{hold}\" & wait",
                opts=["--memory", "65536", "--wall-time", "30"])
    assert r["memory_limit_exceeded"] is True


def test_subtree_removed_by_another_owner_is_made_again():
    # A server that stops removes our (shared) cgroup subtree when it is empty; the next run of
    # any other owner must make it again rather than fail.
    removed = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base) == "envicutor" and not [d for d in dirs if d.startswith("box-")]:
            try:
                os.rmdir(base)
                removed.append(base)
            except OSError:
                pass  # not empty: another owner is using it
    assert removed
    r = sandbox("sh", "-c", "echo again", opts=["--memory", "65536",
                                                "--max-number-of-processes", "8"])
    assert (r["exit_status"], r["stdout"]) == (None, "again\n")
    # Only the subtree of the cgroup we run in is made again (a leftover of another one stays
    # removed); --info names it on v2.
    info = json.loads(subprocess.run([BIN, "sandbox", "--info"], capture_output=True,
                                     check=True).stdout)["cgroup"]
    ours = [w.split("=", 1)[1] for w in info.split() if w.startswith("subtree=")]
    if ours:
        assert os.path.isdir(ours[0])
    assert any(os.path.isdir(base) for base in removed)
