"""Nix runtimes, offline: shells made of plain derivations (builder /bin/sh, no nixpkgs), real
store builds, exact environment capture, timeouts, /gc and /update. Skipped when nix-shell is
not installed (scripts/install-deps installs Debian's nix-bin)."""
import os
import shutil
import tempfile
import time
import uuid

import pytest
import requests

from conftest import ROOT, Server

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "nix")
INSTALLATION_TIMEOUT = 6
HAVE_NIX = shutil.which("nix-shell", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None

pytestmark = pytest.mark.skipif(not HAVE_NIX, reason="nix-shell is not installed")

# One nonce per test session: every store path the fixtures build is new, so what /gc must
# remove and keep is known exactly.
NONCE = uuid.uuid4().hex[:10]

# No binary cache: offline, nix would spend seconds retrying cache.nixos.org per build. The
# fixtures' builders are the host's /bin/sh and coreutils, which Nix's build sandbox lacks
# (nixpkgs brings its own): the daemon the server starts is given them.
NIX_CONFIG = "substituters =\nconnect-timeout = 2\nextra-sandbox-paths = /bin /usr /lib /lib64"


def fixture(name, **subst):
    with open(os.path.join(FIXTURES, name)) as f:
        text = f.read().replace("@NONCE@", NONCE)
    for k, v in subst.items():
        text = text.replace(f"@{k}@", v)
    return text


def nix_body(name, shell, run_script, compile_script="", source_file_name="main.sh"):
    return {"name": name, "nix_shell": shell, "compile_script": compile_script,
            "run_script": run_script, "source_file_name": source_file_name}


@pytest.fixture(scope="module")
def nix_server():
    s = Server(INSTALLATION_TIMEOUT=INSTALLATION_TIMEOUT, UPDATE_TIMEOUT=20,
               NIX_CONFIG=NIX_CONFIG).start()
    yield s
    assert s.stop() == 0, s.log_text()


def runtime_dirs(server):
    return sorted(os.listdir(os.path.join(server.data_dir, "runtimes")))


def store_paths(marker):
    return sorted(p for p in os.listdir("/nix/store") if marker in p and not p.endswith(".drv"))


def test_env_exact(nix_server):
    r = nix_server.post("/runtimes", nix_body(
        "nix-env", fixture("env.nix"),
        'printf "%s|%s|%s|%s" "$MULTI" "$EQUALS" "$SPACES" "$HOME"'))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"stdout", "stderr"}
    rid = nix_server.runtimes()["nix-env"]
    d = nix_server.execute(rid, "unused").json()
    assert d["run"]["exit_status"] is None, d
    assert d["run"]["stdout"] == "first line\nsecond = line\n  third|a=b==c=|  two  spaces  |/tmp"
    # the shell.nix is in the runtime's directory, unchanged
    dirs = [x for x in runtime_dirs(nix_server)]
    found = [x for x in dirs if os.path.exists(os.path.join(nix_server.data_dir, "runtimes", x,
                                                            "shell.nix"))]
    texts = [open(os.path.join(nix_server.data_dir, "runtimes", x, "shell.nix")).read()
             for x in found]
    assert fixture("env.nix") in texts


def test_two_versions_side_by_side(nix_server):
    ids = {}
    for v in ("1.0", "2.0"):
        r = nix_server.post("/runtimes", nix_body(
            f"greet-{v}", fixture("greet.nix", VERSION=v),
            'greet "$(< input.txt)"; type -P greet; type -P cat || echo "no cat"',
            source_file_name="input.txt"))
        assert r.status_code == 200, r.text
        assert f"hook ran for greet {v}" in r.json()["stdout"]
        ids[v] = nix_server.runtimes()[f"greet-{v}"]
    for v in ("1.0", "2.0"):
        d = nix_server.execute(ids[v], "hello").json()
        assert d["run"]["exit_status"] is None, d
        out = d["run"]["stdout"].splitlines()
        assert out[0] == f"greet {v} hello"
        assert out[1].startswith("/nix/store/") and f"greet-{v}-{NONCE}/bin/greet" in out[1]
        # only what the shell put on PATH: the host's /bin is not searched
        assert out[2] == "no cat"


def test_compile_stage_has_the_environment(nix_server):
    r = nix_server.post("/runtimes", nix_body(
        "greet-compiled", fixture("greet.nix", VERSION="2.0"), "./prog",
        compile_script='printf "#!/bin/sh\\n%s\\n" "$(greet compiled)" > prog && /bin/chmod +x prog'))
    assert r.status_code == 200, r.text
    rid = nix_server.runtimes()["greet-compiled"]
    d = nix_server.execute(rid, "x").json()
    assert d["compile"]["exit_status"] is None, d
    # the compiled program runs `greet 2.0 compiled`: greet is on PATH in both stages
    assert d["run"]["stdout"] == "greet 2.0 2.0 compiled\n", d


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def children(pid):
    """Children of every thread of pid."""
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(k) for k in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def daemon_tree(helper):
    """The Nix daemon the helper started: its namespace's init (a child of the helper) whose
    only child is nix-daemon, with the daemon's own children."""
    from conftest import descendants
    for init in children(helper):
        kids = children(init)
        if kids and all(b"nix-daemon" in cmdline(k) for k in kids):
            return {init, *descendants(init)}
    return set()


def no_leftovers(server, before_dirs, marker=None):
    assert runtime_dirs(server) == before_dirs
    helper = server.helper_pid()
    from conftest import descendants
    assert set(descendants(helper)) - daemon_tree(helper) == set()
    if marker:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        assert marker.encode() not in f.read(), f"process {pid} left"
                except FileNotFoundError:
                    pass


# A shellHook that never finishes, and one that starts a child in a session of its own (out of
# nix-shell's process group) that loops forever, then waits for it.
LOOPING_HOOKS = {
    "loop": ("echo looping; while :; do :; done", "looping"),
    "loop-child": ("/usr/bin/setsid /bin/sh -c 'while :; do :; done' @MARKER@ & echo started; wait",
                   "started"),
}


@pytest.mark.parametrize("name", sorted(LOOPING_HOOKS))
def test_installation_timeout(nix_server, name):
    """The installation stops at INSTALLATION_TIMEOUT, and every process of it goes."""
    before = runtime_dirs(nix_server)
    marker = "envicutor-loop-" + uuid.uuid4().hex[:8]
    hook, printed = LOOPING_HOOKS[name]
    t0 = time.time()
    r = nix_server.post("/runtimes", nix_body(
        "loop-" + name, fixture("hook.nix", HOOK=hook.replace("@MARKER@", marker)), "true"))
    took = time.time() - t0
    assert r.status_code == 400, r.text
    assert "timeout expired" in r.json()["stderr"]
    assert printed in r.json()["stdout"]
    assert INSTALLATION_TIMEOUT <= took < INSTALLATION_TIMEOUT + 5, took
    assert "loop-" + name not in nix_server.runtimes()
    no_leftovers(nix_server, before, marker)


def test_syntax_error(nix_server):
    before = runtime_dirs(nix_server)
    r = nix_server.post("/runtimes", nix_body("broken", fixture("syntax-error.nix"), "true"))
    assert r.status_code == 400, r.text
    assert "error" in r.json()["stderr"] and "syntax" in r.json()["stderr"]
    assert "broken" not in nix_server.runtimes()
    no_leftovers(nix_server, before)


def test_gc_frees_deleted_runtime_keeps_live(nix_server):
    ids = nix_server.runtimes()
    v1 = store_paths(f"greet-1.0-{NONCE}")
    v2 = store_paths(f"greet-2.0-{NONCE}")
    assert v1 and v2
    assert nix_server.delete(f"/runtimes/{ids['greet-1.0']}").status_code == 200
    r = nix_server.post("/gc")
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["nix"] is True
    assert all("/nix/store/" + p in g["store_paths_deleted"] for p in v1), g
    assert store_paths(f"greet-1.0-{NONCE}") == []
    assert store_paths(f"greet-2.0-{NONCE}") == v2
    # the live runtimes still run
    d = nix_server.execute(ids["greet-2.0"], "again").json()
    assert d["run"]["stdout"].splitlines()[0] == "greet 2.0 again", d


def test_gc_removes_orphan_directories(nix_server):
    orphan = os.path.join(nix_server.data_dir, "runtimes", "rt-orphan00000000")
    os.mkdir(orphan)
    r = nix_server.post("/gc")
    assert r.status_code == 200, r.text
    assert r.json()["runtime_directories_removed"] == 1
    assert not os.path.exists(orphan)


def test_update_offline(nix_server):
    """With a channel to fetch and no network, the update fails cleanly: 500 and the output.
    Nix commands run as the server's user with HOME in the data directory: its channel list
    there is the one /update reads (root's is not)."""
    import pwd
    user = pwd.getpwnam("envicutor")
    home = os.path.join(nix_server.data_dir, "nix-home")
    os.makedirs(home, exist_ok=True)
    os.chown(home, user.pw_uid, user.pw_gid)
    channels = os.path.join(home, ".nix-channels")
    with open(channels, "w") as f:
        f.write("https://nixos.org/channels/nixpkgs-unstable nixpkgs\n")
    os.chown(channels, user.pw_uid, user.pw_gid)
    try:
        t0 = time.time()
        r = nix_server.post("/update", timeout=60)
        assert r.status_code == 500, r.text
        assert set(r.json()) == {"stdout", "stderr"}
        assert "nixos.org" in r.json()["stderr"], r.json()
        assert time.time() - t0 < 25
    finally:
        os.unlink(channels)


def marker_processes(marker):
    return [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in cmdline(p)]


def test_nix_commands_run_as_the_server_user(nix_server):
    """nix-shell (and its shellHook) run as the server's unprivileged user, not root: the
    hook cannot write where only root may."""
    import pwd
    uid = pwd.getpwnam("envicutor").pw_uid
    target = f"/root/envicutor-nix-hook-{NONCE}"
    hook = f"echo uid=$(/usr/bin/id -u); echo x > {target} && echo wrote-as-root"
    r = nix_server.post("/runtimes", nix_body("nix-whoami", fixture("hook.nix", HOOK=hook),
                                              "true"))
    assert r.status_code == 200, r.text
    assert f"uid={uid}" in r.json()["stdout"], r.json()
    assert "wrote-as-root" not in r.json()["stdout"]
    assert not os.path.exists(target)


def test_a_daemonised_child_holding_stdout_does_not_turn_success_into_a_timeout(nix_server):
    """The hook leaves a child in a session of its own that keeps nix-shell's stdout open and
    never ends. The installation still answers with its own exit status at once (the child
    goes with the command's PID namespace), and nothing of it runs on."""
    marker = "envicutor-hold-" + uuid.uuid4().hex[:8]
    hook = f"/usr/bin/setsid /bin/sh -c 'while :; do /bin/sleep 1; done' {marker} & echo held"
    t0 = time.time()
    r = nix_server.post("/runtimes", nix_body("nix-hold", fixture("hook.nix", HOOK=hook),
                                              "true"))
    took = time.time() - t0
    assert r.status_code == 200, r.text
    assert "held" in r.json()["stdout"]
    assert "timeout" not in r.json()["stderr"]
    assert took < INSTALLATION_TIMEOUT, took
    assert marker_processes(marker) == []


def nix_cgroups():
    found = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(base, d) for d in dirs if d.startswith("nix-")]
        if "/envicutor" in base:
            dirs[:] = []
    return found


def test_kill_9_of_the_helper_during_an_install_leaves_nothing():
    """The helper is killed (SIGKILL) while nix-shell's hook runs, with a child in a session
    of its own. Nothing of the installation runs on (neither the hook, its child, nor the
    daemon the helper started), the server stops, and after a restart the runtime is not
    there, half-installed or otherwise, and no cgroup of the dead helper is left."""
    marker = "envicutor-k9-" + uuid.uuid4().hex[:8]
    hook = (f"/usr/bin/setsid /bin/sh -c 'while :; do /bin/sleep 1; done' {marker} & "
            f"while :; do /bin/sleep 1; done")
    # a socket of its own, so that this server's helper starts the daemon whatever else runs
    sock_dir = tempfile.mkdtemp(prefix="envicutor-nixd-")
    os.chmod(sock_dir, 0o755)
    s = Server(INSTALLATION_TIMEOUT=300, NIX_CONFIG=NIX_CONFIG,
               NIX_DAEMON_SOCKET_PATH=os.path.join(sock_dir, "socket")).start()
    import threading
    try:
        before = runtime_dirs(s)
        def install():
            try:
                s.post("/runtimes", nix_body("nix-k9", fixture("hook.nix", HOOK=hook), "true"))
            except requests.ConnectionError:
                pass  # the server stops when its helper dies

        t = threading.Thread(target=install)
        t.daemon = True
        t.start()
        deadline = time.time() + 60
        while len(marker_processes(marker)) < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert marker_processes(marker), "the hook's child never started"
        helper = s.helper_pid()
        daemon = daemon_tree(helper)
        assert daemon, "the helper started no daemon"
        os.kill(helper, 9)
        s.proc.wait(timeout=30)
        deadline = time.time() + 10
        while (marker_processes(marker) or any(os.path.exists(f"/proc/{p}") for p in daemon)) \
                and time.time() < deadline:
            time.sleep(0.05)
        assert marker_processes(marker) == []
        assert [p for p in daemon if os.path.exists(f"/proc/{p}")] == []
        t.join(timeout=30)
        s.log.close()
        s.start()
        assert "nix-k9" not in s.runtimes()
        assert runtime_dirs(s) == before
        # the new helper answers requests only once its start-up (the clean-up included) is done
        assert s.execute(s.runtimes()["Bash"], "echo ok").json()["run"]["stdout"] == "ok\n"
        assert [c for c in nix_cgroups() if f"/nix-{helper}-" in c] == []
    finally:
        assert s.stop() == 0, s.log_text()


def test_a_daemon_already_running_is_used():
    """On a host whose Nix is set up as multi-user already (a service manager runs the
    daemon), the server uses that daemon and starts none of its own."""
    import subprocess
    env = {"PATH": "/usr/bin:/bin", "NIX_CONFIG": NIX_CONFIG}
    d = subprocess.Popen(["nix-daemon"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    s = None
    try:
        import socket as sk
        deadline = time.time() + 10
        while True:
            try:
                with sk.socket(sk.AF_UNIX) as c:
                    c.connect("/nix/var/nix/daemon-socket/socket")
                break
            except OSError:
                assert time.time() < deadline, "nix-daemon did not start"
                time.sleep(0.05)
        s = Server(NIX_CONFIG=NIX_CONFIG).start()
        r = s.post("/runtimes", nix_body("nix-ext", fixture("env.nix"), 'printf "%s" "$EQUALS"'))
        assert r.status_code == 200, r.text
        assert daemon_tree(s.helper_pid()) == set()
        rid = s.runtimes()["nix-ext"]
        assert s.execute(rid, "x").json()["run"]["stdout"] == "a=b==c="
    finally:
        if s:
            assert s.stop() == 0, s.log_text()
        d.kill()
        d.wait()


def test_restart_keeps_nix_runtime(nix_server):
    rid = nix_server.runtimes()["nix-env"]
    nix_server.stop()
    nix_server.start()
    d = nix_server.execute(rid, "x").json()
    assert d["run"]["stdout"].startswith("first line\n"), d


def test_nix_unavailable_without_nix_on_path(tmp_path):
    """A server that cannot find Nix serves host runtimes and says so for Nix requests."""
    s = Server(PATH="/usr/sbin:/sbin:/nonexistent").start()
    try:
        r = s.post("/runtimes", nix_body("n", fixture("env.nix"), "true"))
        assert r.status_code == 400 and "Nix is not available" in r.json()["message"]
        r = s.post("/update")
        assert r.status_code == 500 and "Nix is not available" in r.json()["stderr"]
    finally:
        assert s.stop() == 0
