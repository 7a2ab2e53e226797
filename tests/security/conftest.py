"""The attack suite: hostile programs and hostile requests sent through the HTTP API of a real
`envicutor serve`, with the host checked afterwards. Server helpers come from tests/api."""
import os
import shutil
import stat
import time

import pytest
import requests

import importlib.util  # noqa: E402

# tests/api/conftest.py holds the server helpers; loaded under a name of its own, because
# this file is a "conftest" module too.
_spec = importlib.util.spec_from_file_location(
    "api_helpers", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "api", "conftest.py"))
_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_api)
RUN_DIR, Server = _api.RUN_DIR, _api.Server
box_cgroups, box_mounts, box_processes = _api.box_cgroups, _api.box_mounts, _api.box_processes


def host_state(srv):
    """Everything of the host the attacks aim at, to compare before and after: the canaries
    (content, owner, mode), and the owner and mode of the data directory and of what lies at
    its top (runtimes come and go below it, so their contents are not compared)."""
    out = {}
    for p in [srv.data_dir] + [os.path.join(srv.data_dir, n) for n in os.listdir(srv.data_dir)]:
        if p.endswith(("-wal", "-shm", "-journal")):
            continue
        st = os.lstat(p)
        out[p] = (st.st_mode, st.st_uid, st.st_gid, None)
    for d, dirs, files in os.walk(srv.canary_dir):
        for n in dirs + files + [""]:
            p = os.path.join(d, n)
            st = os.lstat(p)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    content = f.read()
            out[p] = (st.st_mode, st.st_uid, st.st_gid, content)
    with open(os.path.join(srv.data_dir, "canary"), "rb") as f:
        out["data canary"] = f.read()
    return out


def residue(srv, timeout=10):
    """Box processes, run cgroups and box mounts of *this* server's boxes are gone. Other
    engineers' servers share the host, so a box of another server is not ours: only boxes
    whose processes descend from this server's helper count, plus the global mount and cgroup
    checks, retried until quiet."""
    deadline = time.time() + timeout
    while True:
        left = (box_processes(), box_cgroups(), box_mounts(), os.listdir(RUN_DIR + "/boxes"))
        if left == ([], [], [], []) or time.time() > deadline:
            return left
        time.sleep(0.1)


class Attacked:
    """A server with canaries planted on the host around it."""

    def __init__(self, **env):
        env.setdefault("MAX_REQUEST_SIZE", 4 << 20)
        self.srv = Server(MAX_CONCURRENT_SUBMISSIONS=2, **env)
        self.srv.canary_dir = os.path.join(os.path.dirname(self.srv.data_dir),
                                           os.path.basename(self.srv.data_dir) + "-canary")

    def start(self):
        s = self.srv
        os.makedirs(s.canary_dir, mode=0o755)
        for name, mode in [("secret", 0o600), ("public", 0o644), ("passwd", 0o644)]:
            p = os.path.join(s.canary_dir, name)
            with open(p, "w") as f:
                f.write("canary " + name + "\n")
            os.chmod(p, mode)
        s.start()
        # a canary inside the data directory too, owned by the server's user like the rest
        p = os.path.join(s.data_dir, "canary")
        with open(p, "w") as f:
            f.write("data canary\n")
        os.chmod(p, 0o600)
        st = os.stat(s.data_dir)
        os.chown(p, st.st_uid, st.st_gid)
        s.before = host_state(s)
        return s


@pytest.fixture(scope="module")
def srv():
    a = Attacked()
    s = a.start()
    yield s
    try:
        assert host_state(s) == s.before, "a canary or the data directory changed"
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(s.canary_dir, ignore_errors=True)


def healthy(s):
    assert s.get("/health").text == "Up and running"
    r = s.execute(s.runtimes()["Bash"], "echo ok")
    assert r.status_code == 200 and r.json()["run"]["stdout"] == "ok\n", r.text


def check_host(s):
    """After an attack: canaries unchanged, the server healthy, nothing of its boxes left."""
    now = host_state(s)
    changed = {k for k in set(now) | set(s.before) if now.get(k) != s.before.get(k)}
    assert not changed, changed
    healthy(s)
    procs, cgroups, mounts, boxes = residue(s)
    # Other servers on the machine (concurrent test suites) may have boxes of their own; ours
    # are children of our helper.
    helper = s.helper_pid()
    ours = [p for p in procs if _descends(p, helper)]
    assert ours == [], ours
    if not procs:
        assert cgroups == [] and mounts == [] and boxes == [], (cgroups, mounts, boxes)


def _descends(pid, ancestor):
    try:
        while pid > 1:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
            if pid == ancestor:
                return True
    except (FileNotFoundError, ValueError, IndexError):
        pass
    return False


def stage(r, name="run"):
    assert r.status_code == 200, r.text
    return r.json()[name]
