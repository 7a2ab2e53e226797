"""SPEC §2, property by property, and the nasty cases of teardown."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, box_cgroups, box_dirs, box_mounts, box_processes, sandbox

pytestmark = pytest.mark.usefixtures("no_residue")


def test_secrets_and_host_users_are_not_visible():
    r = sandbox("sh", "-c", "ls /etc/shadow /etc/gshadow /root /home 2>&1; cat /etc/passwd")
    for name in ("/etc/shadow", "/etc/gshadow", "/root", "/home"):
        assert f"cannot access '{name}'" in r["stdout"]
    users = [l.split(":")[0] for l in r["stdout"].splitlines() if ":x:" in l]
    assert users == ["root", "box", "nobody"]


def test_run_directory_and_other_boxes_are_not_visible():
    r = sandbox("sh", "-c", "ls /run/envicutor; ls /sys/fs/cgroup; ls /run")
    assert "No such file" in r["stderr"]
    assert r["stdout"] == ""


def test_only_own_processes_are_visible():
    r = sandbox("ps", "-eo", "pid,user,comm", "--no-headers")
    rows = [l.split() for l in r["stdout"].splitlines()]
    # the box's init (root, PID 1, named init rather than after its caller), the command and
    # ps itself: nothing of the host
    assert [row[0] for row in rows][:1] == ["1"]
    assert {row[2] for row in rows} <= {"init", "ps"}
    assert len(rows) <= 3


def test_environment_is_exactly_what_is_given():
    os.environ["ENVICUTOR_TEST_SECRET"] = "leak"
    r = sandbox("env", opts=["--env", "EXTRA=a b=c", "--env", "LANG=C"])
    assert sorted(r["stdout"].splitlines()) == sorted(
        ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C", "EXTRA=a b=c"])


def test_no_capabilities_no_new_privs_and_seccomp():
    r = sandbox("grep", "-E", "^(Cap|NoNewPrivs|Seccomp:)", "/proc/self/status")
    fields = dict(l.split(":\t") for l in r["stdout"].splitlines())
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


def test_box_user_is_unprivileged_and_owns_box():
    r = sandbox("sh", "-c", "id -u; id -g; stat -c %u /box; touch /box/x && echo ok")
    uid, gid, owner, ok = r["stdout"].split()
    assert 60000 <= int(uid) < 61000 and uid == gid == owner and ok == "ok"


def test_every_mount_is_nosuid_and_nodev_and_read_only_outside_box_and_tmp():
    r = sandbox("cat", "/proc/self/mountinfo")
    for line in r["stdout"].splitlines():
        fields = line.split()
        target, opts = fields[4], fields[5].split(",")
        assert "nosuid" in opts, line
        if target != "/dev":  # the box's own five nodes, made there; see test_dev_*
            assert "nodev" in opts, line
        if target not in ("/box", "/tmp", "/proc"):
            assert "ro" in opts, line
    r = sandbox("sh", "-c", "touch /usr/x /etc/x /x /dev/x 2>&1; echo $?")
    assert r["stdout"].count("Read-only file system") == 4


def test_dev_holds_only_its_own_nodes_and_no_more_can_be_made():
    r = sandbox("sh", "-c", "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random "
                "/dev/urandom; mknod /box/n c 1 3 2>&1; mknod /dev/n c 1 3 2>&1; echo $?")
    lines = r["stdout"].splitlines()
    assert lines[:5] == ["/dev/null character special file 1:3 666",
                         "/dev/zero character special file 1:5 666",
                         "/dev/full character special file 1:7 666",
                         "/dev/random character special file 1:8 666",
                         "/dev/urandom character special file 1:9 666"]
    assert "Operation not permitted" in lines[5]
    assert lines[-1] != "0"


def test_dev_null_is_not_the_hosts_inode():
    # a lock on a node shared with the host or another box would be a channel between boxes
    r = sandbox("stat", "-c", "%d:%i", "/dev/null")
    st = os.stat("/dev/null")
    assert r["stdout"].strip() != f"{st.st_dev}:{st.st_ino}"


def test_device_nodes_work_and_others_are_absent():
    r = sandbox("sh", "-c", "head -c 4 /dev/zero | od -An -tx1; echo x > /dev/null && echo null; "
                "head -c 8 /dev/urandom | wc -c; ls /dev")
    assert r["stdout"].split()[:4] == ["00"] * 4 and "null" in r["stdout"]
    listing = set(r["stdout"].split()[6:])
    assert listing == {"fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout",
                       "urandom", "zero"}


def test_host_dev_shm_is_not_shared(tmp_path):
    canary = "/dev/shm/envicutor-canary-%d" % os.getpid()
    with open(canary, "w") as f:
        f.write("host")
    try:
        r = sandbox("sh", "-c", f"ls /dev/shm/; cat {canary}")
        assert "envicutor-canary" not in r["stdout"]
    finally:
        os.unlink(canary)


def test_host_loopback_is_unreachable_and_own_loopback_works():
    hits = []
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(3)
    port = srv.getsockname()[1]

    def accept():
        try:
            hits.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    code = (
        "import socket,sys\n"
        f"try:\n socket.create_connection(('127.0.0.1',{port}),timeout=1); print('reached')\n"
        "except OSError as e: print('refused')\n"
        "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
        "c=socket.create_connection(s.getsockname()); a,_=s.accept(); c.send(b'ping')\n"
        "print(a.recv(4).decode())\n"
        "print([l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])\n"
    )
    r = sandbox("python3", "-c", code)
    srv.close()
    t.join()
    assert hits == []
    assert r["stdout"].splitlines() == ["refused", "ping", "['lo']"]


def test_two_boxes_at_once_do_not_see_each_other():
    script = ("id -u; echo $0 > /tmp/mine; echo $0 > /box/mine; sleep 1; "
              "cat /tmp/mine /box/mine; ls /tmp; ls /box")
    procs = [subprocess.Popen([BIN, "sandbox", "--", "sh", "-c", script, name],
                              stdout=subprocess.PIPE) for name in ("first", "second")]
    import json
    outs = [json.loads(p.communicate(timeout=30)[0])["stdout"].split() for p in procs]
    assert outs[0][0] != outs[1][0]  # two uids
    assert outs[0][1:] == ["first", "first", "mine", "mine"]
    assert outs[1][1:] == ["second", "second", "mine", "mine"]


def test_daemonised_child_does_not_delay_the_result():
    start = time.monotonic()
    r = sandbox("sh", "-c", "setsid sh -c 'sleep 100' >/dev/null 2>&1 </dev/null & echo done",
                opts=["--wall-time", "20"])
    assert r["stdout"] == "done\n" and r["exit_status"] is None
    assert time.monotonic() - start < 2


def test_background_child_holding_stdout_does_not_delay_the_result():
    start = time.monotonic()
    r = sandbox("sh", "-c", "(sleep 100 &); echo hi", opts=["--wall-time", "20"])
    assert r["stdout"] == "hi\n"
    assert time.monotonic() - start < 2


def test_thread_bomb_is_contained():
    r = sandbox("/opt/progs/spawn", "threads", "100000", opts=["--max-number-of-processes", "50"])
    assert int(r["stdout"]) == 49


def test_links_fifos_and_unreadable_directories_left_for_teardown():
    r = sandbox("sh", "-c", "mkdir -p /box/d/e /tmp/t; touch /box/d/e/f; chmod 0 /box/d/e /box/d; "
                "ln -s / /box/root; ln -s /etc/passwd /box/passwd; mkfifo /box/fifo; "
                "ln -s /box /box/loop; chmod 0 /tmp/t; echo left")
    assert r["stdout"] == "left\n"
    assert os.path.exists("/etc/passwd") and os.path.isdir("/usr/bin")


def test_external_box_directory_is_used_and_kept(tmp_path):
    d = tmp_path / "boxdir"
    d.mkdir()
    (d / "input.txt").write_text("from the caller\n")
    r = sandbox("sh", "-c", "cat input.txt; echo made > out.txt",
                opts=["--box-dir", str(d)])
    assert r["stdout"] == "from the caller\n"
    assert (d / "out.txt").read_text() == "made\n"


def long_dir(base, length):
    """A directory under base whose absolute path is exactly `length` bytes long."""
    path = str(base)
    while len(path) < length:
        step = min(200, length - len(path) - 1)
        if step < 1:  # one byte short: lengthen the last component instead
            path += "x"
            continue
        path += "/" + "d" * step
    os.makedirs(path)
    assert len(path) == length
    return path


def test_long_box_directory_is_refused_clearly_or_used():
    # the box keeps its directory's path in 320 bytes (319 and the NUL)
    base = "/tmp/envicutor-longdir-%d" % os.getpid()
    try:
        fits = long_dir(base + "/fits", 319)
        r = sandbox("sh", "-c", "echo inside > out.txt", opts=["--box-dir", fits])
        assert r["exit_status"] is None
        with open(fits + "/out.txt") as f:
            assert f.read() == "inside\n"
        for length in (409, 4000, 320):
            d = long_dir(base + "/%d" % length, length)
            p = sandbox("true", opts=["--box-dir", d], check=False)
            assert p.returncode == 1, (length, p.returncode, p.stderr.decode())
            assert b"is longer than 319 bytes" in p.stderr, p.stderr.decode()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_kill_9_of_the_owner_leaves_nothing_that_cleanup_does_not_remove():
    p = subprocess.Popen([BIN, "sandbox", "--", "sh", "-c", "sleep 100 & sleep 100"],
                         stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while len(box_processes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(box_processes()) >= 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the box's init dies with its parent, and the whole PID namespace with it
    deadline = time.monotonic() + 5
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert box_processes() == []
    assert box_cgroups() != [] or box_mounts() != [] or box_dirs() != []  # residue to clean
    subprocess.run([BIN, "sandbox", "--cleanup"], check=True, capture_output=True)
    # the no_residue fixture checks that everything is gone


def test_hostname_and_ipc_are_private():
    r = sandbox("sh", "-c", "hostname; cat /proc/sys/kernel/hostname; ipcs -q | tail -n +4")
    assert r["stdout"].split() == ["box", "box"]


def test_init_shows_nothing_of_the_callers_command_line():
    """init, PID 1 of the box, is a clone of the `sandbox` command: its command line (the
    user's options, paths, the command itself) must not show through /proc/1."""
    marker = "marker-of-the-callers-command-line"
    script = ("cat /proc/1/cmdline /proc/1/comm /proc/1/status; "
              "for f in environ maps; do cat /proc/1/$f; done; "
              "for l in exe cwd root; do readlink /proc/1/$l; done; echo end")
    r = sandbox("sh", "-c", script, marker, opts=["--env", "MARKER=" + marker + "-env"])
    seen = r["stdout"] + r["stderr"]
    assert "\nState:" in seen and r["stdout"].endswith("end\n"), seen  # /proc/1 was read
    for s in (marker, "--mount", "/opt/progs", BIN, os.path.basename(BIN), "sandbox"):
        assert s not in seen, (s, seen)


def test_signals_ignored_or_blocked_by_the_caller_are_not_inherited():
    """Ignored signals and the signal mask survive execve; a caller that ignores or blocks some
    (a shell's nohup, a service manager) must not pass them on to the program, nor leave init,
    PID 1 of the box, with anything but default dispositions. Signal 37 is above the 32 that
    /proc/PID/stat can show."""
    def ignore_and_block():
        for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGUSR1, signal.SIGTERM, 37):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, 38})

    argv = [BIN, "sandbox", "--", "/bin/cat", "/proc/self/status", "/proc/1/status"]
    p = subprocess.run(argv, capture_output=True, timeout=60, preexec_fn=ignore_and_block)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)["stdout"]
    lines = [l for l in out.splitlines() if l.split(":")[0] in ("SigBlk", "SigIgn", "SigCgt")]
    assert len(lines) == 6, out  # both files were read
    for l in lines:
        assert l.split()[1] == "0" * 16, (l, out)


LOCKS_IN_A_BOX = r"""
import errno, fcntl, os, sqlite3, sys

def sqlite_two_connections(path):
    a = sqlite3.connect(path, timeout=0, isolation_level=None)
    b = sqlite3.connect(path, timeout=0, isolation_level=None)
    a.execute("create table t (x)")
    a.execute("begin immediate")
    a.execute("insert into t values (1)")
    try:
        b.execute("begin immediate")
        blocked = False
    except sqlite3.OperationalError as e:
        blocked = "locked" in str(e)
    a.execute("commit")
    b.execute("begin immediate"); b.execute("insert into t values (2)"); b.execute("commit")
    return blocked, a.execute("select count(*) from t").fetchone()[0]

def excluded_between_processes(path, lock):
    # the parent holds the lock; a child of the same box must be refused it
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    lock(fd, True)
    pid = os.fork()
    if pid == 0:
        fd2 = os.open(path, os.O_RDWR)
        try:
            lock(fd2, False)
            os._exit(0)
        except OSError as e:
            os._exit(1 if e.errno in (errno.EAGAIN, errno.EACCES) else 2)
    return os.waitpid(pid, 0)[1] >> 8

flock = lambda fd, wait: fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
lockf = lambda fd, wait: fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
for d in ("/tmp", "/box"):
    print(d, sqlite_two_connections(d + "/db.sqlite"),
          excluded_between_processes(d + "/f", flock), excluded_between_processes(d + "/g", lockf))
"""


def test_locks_of_a_boxs_own_files_still_work():
    """The shared trees are per-box overlays (so that a lock there reaches no other box); the
    box's own files lock as before: SQLite with two connections, flock and lockf between two
    processes, in /tmp and in /box."""
    r = sandbox("python3", "-c", LOCKS_IN_A_BOX)
    assert r["exit_status"] is None, r
    assert r["stdout"] == "/tmp (True, 2) 1 1\n/box (True, 2) 1 1\n", r


WRITE_LOCKS_ON_SHARED_FILES = r"""
import errno, fcntl, struct
for path in ("/usr/bin/env", "/etc/ld.so.cache"):
    f = open(path, "rb")
    for name, cmd in (("posix", fcntl.F_SETLK), ("ofd", fcntl.F_OFD_SETLK)):
        try:
            fcntl.fcntl(f, cmd, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
            print(path, name, "granted")
        except OSError as e:
            print(path, name, errno.errorcode[e.errno])
    try:
        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        print(path, "lease granted")
    except OSError as e:
        print(path, "lease", errno.errorcode[e.errno])
"""


def test_write_locks_and_leases_on_shared_files_are_impossible():
    """Why POSIX and OFD locks are no channel between boxes: a write lock needs a file opened
    for writing, which the read-only shared trees never give (read locks never conflict), and
    a lease needs the file's owner (or CAP_LEASE)."""
    r = sandbox("python3", "-c", WRITE_LOCKS_ON_SHARED_FILES)
    assert r["exit_status"] is None, r
    assert r["stdout"] == "".join(f"{p} posix EBADF\n{p} ofd EBADF\n{p} lease EACCES\n"
                                  for p in ("/usr/bin/env", "/etc/ld.so.cache")), r
