"""Hostile programs through POST /execute: each test attacks, then checks the answer and the
host (canaries, residue, a healthy server). Sandbox-level proofs live in tests/sandbox; these
go through every layer the server adds (pipeline stages in one box, the privileged helper's
file writes and mounts, project extraction)."""
import base64
import concurrent.futures
import io
import os
import shutil
import stat
import tempfile
import time
import zipfile

import pytest

from conftest import Server, check_host, stage


@pytest.fixture(scope="module")
def bash(srv):
    return srv.runtimes()["Bash"]


def add_rt(srv, name, run, compile="", sfn="main.sh", env=None):
    return srv.add_host_runtime(name, run, source_file_name=sfn, compile_script=compile, env=env)


# ---- files the server opens, writes or removes in a box after untrusted code ran --------------

# The helper writes the source (or the project archive) before any untrusted code runs, and
# the extract stage removes the archive inside the sandbox; nothing else of the box is opened
# by a privileged process afterwards, and the box is removed by unmounting it. The compile
# stage (untrusted) runs before the run stage: it plants links, FIFOs and unreadable
# directories at every name the later stages and the teardown use.
PLANT = r"""
set +e
c=%(canary)s
rm -f main.sh; ln -s $c/secret main.sh
ln -s $c/public .envicutor-project.zip
mkfifo out.txt stdout stderr; ln -s / root; ln -s /proc/1/root proc1
mkdir -p deep/a/b; ln -s $c deep/a/b/link; chmod 0 deep/a/b deep
ln -s /run/envicutor/boxes boxes; ln -s ../../.. up
exit 0
"""


def test_links_fifos_and_directories_left_by_the_compile_stage(srv):
    rid = add_rt(srv, "planter", "ls -la; cat main.sh; echo run-done",
                 compile=PLANT % {"canary": srv.canary_dir})
    run = stage(srv.execute(rid, "echo hi"))
    assert "run-done" in run["stdout"]
    assert "canary secret" not in run["stdout"]  # the host's canary is not in the box
    check_host(srv)


def test_project_archive_with_links_fifo_and_slip_entries(srv, bash):
    c = srv.canary_dir
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../../../.." + c + "/public", "overwritten")
        z.writestr(c + "/secret", "overwritten")
        for name, target in [("lnk", c), ("main.sh", c + "/secret"),
                             (".envicutor-project.zip", c + "/public"), ("root", "/")]:
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            zi.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(zi, target)
        z.writestr("lnk/public", "through the link")
        zi = zipfile.ZipInfo("suid")
        zi.create_system = 3
        zi.external_attr = (stat.S_IFREG | 0o6755) << 16
        z.writestr(zi, "#!/bin/sh\nid -u\n")
        zi = zipfile.ZipInfo("dev")
        zi.create_system = 3
        zi.external_attr = (stat.S_IFCHR | 0o666) << 16
        z.writestr(zi, "")
    r = srv.execute(bash, base64.b64encode(buf.getvalue()).decode(), project=True)
    assert r.status_code == 200, r.text
    ex = r.json()["extract"]
    assert ex is not None
    check_host(srv)


def test_project_archive_with_a_run_that_follows_its_links(srv):
    rid = add_rt(srv, "proj-reader", "cat link/secret link/public 2>&1; ls -la /box; echo done",
                 sfn="main.sh")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        zi = zipfile.ZipInfo("link")
        zi.create_system = 3
        zi.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(zi, srv.canary_dir)
        z.writestr("main.sh", "x")
    run = stage(srv.execute(rid, base64.b64encode(buf.getvalue()).decode(), project=True))
    assert "done" in run["stdout"] and "canary " not in run["stdout"]
    check_host(srv)


def test_zip_bomb_is_bounded_by_the_box(srv, bash):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"bomb{i}", b"\0" * (120 << 20))  # 480 MB > the box's 256 MB disk
    assert len(buf.getvalue()) < 2 << 20
    t = time.time()
    r = srv.execute(bash, base64.b64encode(buf.getvalue()).decode(), project=True)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["extract"]["exit_status"] is not None and j["run"] is None
    assert time.time() - t < 30
    check_host(srv)


def test_many_tiny_entries_exhaust_only_the_boxs_inodes(srv, bash):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(17000):
            z.writestr(f"f{i}", "")
    r = srv.execute(bash, base64.b64encode(buf.getvalue()).decode(), project=True)
    assert r.status_code == 200 and r.json()["extract"]["exit_status"] is not None, r.text
    check_host(srv)


# ---- secrets of the host and of the server ---------------------------------------------------

def test_server_data_directory_and_secrets_are_out_of_reach(srv, bash):
    d = srv.data_dir
    src = f"""
for f in {d}/canary {d}/envicutor.db {srv.canary_dir}/public /etc/shadow /root /proc/1/environ \
         /proc/1/root/etc/shadow /run/envicutor /var/lib/envicutor /sys/fs/cgroup; do
  cat $f 2>/dev/null | head -c 100; ls $f 2>/dev/null
done
cat /proc/self/mountinfo; env; echo end"""
    run = stage(srv.execute(bash, src))
    out = run["stdout"]
    assert out.endswith("end\n")
    # (the host paths of the box's bind mounts, the runtime's among them, do show in
    # /proc/self/mountinfo: paths, never contents; docs/threat-model.md)
    for leak in ["data canary", "canary public", "SQLite format", "root:", "ENVICUTOR", "PORT="]:
        assert leak not in out, leak
    check_host(srv)


# ---- resources: memory, CPU, stages ----------------------------------------------------------

@pytest.mark.parametrize("how", [
    "python3 -c 'b = bytearray(300 << 20); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]'",
    "head -c 300000000 /dev/zero > /dev/shm/x; head -c 300000000 /dev/zero > /tmp/y; "
    "python3 -c 'b = bytearray(150 << 20); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]'",
])
def test_memory_through_heap_tmpfs_and_dev_shm(srv, bash, how):
    run = stage(srv.execute(bash, how, run_limits={"memory": 100000}))
    assert run["exit_status"] is not None
    assert run["memory"] <= 100000 + 2048, run
    check_host(srv)


def test_cpu_hidden_in_threads_and_children(srv, bash):
    src = ("for i in 1 2 3 4; do (while :; do :; done) & done; "
           "python3 -c 'import threading\nfor _ in range(4): threading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()' & wait")
    t = time.time()
    run = stage(srv.execute(bash, src, run_limits={"cpu_time": 1, "extra_time": 0.5,
                                                     "wall_time": 20}))
    assert run["exit_status"] == "TO", run
    assert 1 <= run["cpu_time"] < 3, run
    assert time.time() - t < 15
    check_host(srv)


def test_compile_stage_usage_does_not_leak_into_the_run(srv):
    compile = ("head -c 50000000 /dev/zero > /tmp/fill; "
               "(setsid bash -c 'while :; do :; done' &); nohup bash -c 'while :; do :; done' & "
               "python3 -c 'b = bytearray(80 << 20); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]'; "
               "timeout 1 bash -c 'while :; do :; done'; exit 0")
    rid = add_rt(srv, "leaky-compile", "cat /proc/loadavg >/dev/null; ls /tmp; echo run", compile=compile)
    j = srv.execute(rid, "x").json()
    assert j["compile"]["cpu_time"] > 0.5 and j["compile"]["memory"] > 80000, j["compile"]
    run = j["run"]
    assert run["stdout"] == "run\n", run  # the compile's /tmp is gone too
    assert run["cpu_time"] < 0.3 and run["memory"] < 30000, run
    check_host(srv)


# ---- processes -------------------------------------------------------------------------------

def test_fork_bomb_daemons_and_signals(srv, bash):
    src = ("kill -9 -1; (setsid sleep 1000 &); nohup sleep 1000 & disown; "
           "python3 -c 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass' & sleep 2; echo done")
    t = time.time()
    run = stage(srv.execute(bash, src, run_limits={"wall_time": 10}))
    assert time.time() - t < 15
    assert srv.proc.poll() is None and srv.helper_pid()
    check_host(srv)


# ---- output ----------------------------------------------------------------------------------

def test_output_flood_binary_and_nul_bytes(srv, bash):
    src = ("printf 'a\\0b\\xff\\xfe\\xc0\\x80z'; printf 'e\\0\\xff' >&2; "
           "head -c 60000000 /dev/urandom >&2; head -c 60000000 /dev/zero")
    run = stage(srv.execute(bash, src))
    assert run["stdout"].startswith("a\x00b\ufffd\ufffd\ufffd\ufffdz\x00")
    assert run["stderr"].startswith("e\x00\ufffd")
    assert run["stdout_truncated"] and run["stderr_truncated"]
    assert len(run["stdout"].encode()) <= 4 * 2**20 + 16
    check_host(srv)


def test_pipes_held_by_background_children(srv, bash):
    t = time.time()
    run = stage(srv.execute(bash, "(sleep 100; echo late) & (setsid sleep 100 >&2 &) ; echo now"))
    assert run["stdout"] == "now\n" and time.time() - t < 10
    check_host(srv)


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/stderr", "/proc/self/fd/1"])
def test_special_files_where_output_is_expected(srv, bash, target):
    src = f"rm -f {target} 2>/dev/null; ln -sf /dev/zero out 2>/dev/null; exec >{target}; echo x; exec 1>&-; exec 2>&-; sleep 0.2"
    run = stage(srv.execute(bash, src))
    assert run["exit_status"] in (None, "RE")
    check_host(srv)


# ---- network ---------------------------------------------------------------------------------

def test_api_port_and_host_addresses_are_unreachable(srv, bash):
    port = srv.port
    src = f"""
for h in 127.0.0.1 0.0.0.0 10.0.2.2 172.17.0.1 169.254.169.254; do
  timeout 2 bash -c "exec 3<>/dev/tcp/$h/{port}" 2>/dev/null && echo OPEN $h
done
getent hosts example.com && echo DNS; echo end"""
    run = stage(srv.execute(bash, src))
    assert run["stdout"] == "end\n", run
    check_host(srv)


def test_another_boxs_port_is_unreachable(srv, bash):
    listen = ("python3 -c 'import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              "s.bind((\"0.0.0.0\", 7777)); s.listen(); s.settimeout(4)\n"
              "try:\n c,_=s.accept(); print(\"ACCEPTED\")\nexcept OSError: print(\"alone\")'")
    connect = ("sleep 1; for i in 1 2 3; do timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/7777' "
               "2>/dev/null && echo CONNECTED; sleep 0.3; done; echo end")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        a = ex.submit(srv.execute, bash, listen)
        time.sleep(0.3)
        b = ex.submit(srv.execute, bash, connect)
        ra, rb = stage(a.result()), stage(b.result())
    assert ra["stdout"] == "alone\n", ra
    assert rb["stdout"] == "end\n", rb
    check_host(srv)


# ---- disk ------------------------------------------------------------------------------------

def test_filling_the_disk_and_inodes_of_the_box(srv, bash):
    src = ("for i in 1 2 3; do head -c 99000000 /dev/zero > big$i; done; df -k /box | tail -1; "
           "i=0; while :> f$i 2>/dev/null; do i=$((i+1)); done; echo files $i")
    run = stage(srv.execute(bash, src, run_limits={"wall_time": 30}))
    assert "files" in run["stdout"]
    check_host(srv)
    # the next submission gets a fresh, empty box
    assert stage(srv.execute(bash, "ls -A | wc -l"))["stdout"] == "1\n"


# ---- a compromised server process ------------------------------------------------------------

def test_helper_does_not_follow_links_swapped_into_the_runtime_store(srv):
    """The HTTP process is unprivileged but owns the data directory. If it were compromised it
    could replace the runtime store (or one runtime) with a link to a host directory that
    its user cannot reach and ask the helper to bind it into a box. Done here from outside as
    root, then the run is asked for through the API as usual."""
    rid = add_rt(srv, "swapped", "cat /runtime/secret 2>&1; ls /runtime 2>&1; echo end")
    rt_root = os.path.join(srv.data_dir, "runtimes")
    dirs = [d for d in os.listdir(rt_root)]
    secret_parent = tempfile.mkdtemp(prefix="envicutor-sec-", dir="/tmp")  # 0700, root's
    fake = os.path.join(secret_parent, "runtimes")
    os.makedirs(fake)
    for d in dirs:
        os.makedirs(os.path.join(fake, d))
        with open(os.path.join(fake, d, "secret"), "w") as f:
            f.write("host secret\n")
        os.chmod(os.path.join(fake, d, "secret"), 0o644)
        os.chmod(os.path.join(fake, d), 0o755)
    os.chmod(fake, 0o755)
    aside = rt_root + ".aside"
    os.rename(rt_root, aside)
    os.symlink(fake, rt_root)
    try:
        r = srv.execute(rid, "x")
        assert "host secret" not in r.text
        # the lower level too: one runtime's directory swapped for a link
        os.unlink(rt_root)
        os.rename(aside, rt_root)
        victim = [d for d in dirs if os.path.exists(os.path.join(rt_root, d, "run.sh"))]
        for d in victim:
            os.rename(os.path.join(rt_root, d), os.path.join(rt_root, d + ".aside"))
            os.symlink(os.path.join(fake, d), os.path.join(rt_root, d))
        r = srv.execute(rid, "x")
        assert "host secret" not in r.text
        for d in victim:
            os.unlink(os.path.join(rt_root, d))
            os.rename(os.path.join(rt_root, d + ".aside"), os.path.join(rt_root, d))
    finally:
        if os.path.islink(rt_root):
            os.unlink(rt_root)
            os.rename(aside, rt_root)
        shutil.rmtree(secret_parent)
    assert "end" in stage(srv.execute(rid, "x"))["stdout"]
    check_host(srv)


# ---- what the server's user leaves in the data directory for the next start, as root ----------

def _as_user(uid, gid, fn):
    """Runs fn in a child process with the server user's identity; its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("name, kind, why", [
    ("envicutor.db-wal", "hard link", "has more than one hard link"),
    ("envicutor.db", "symbolic link", "is a symbolic link"),
])
def test_links_planted_in_the_data_directory_are_refused_at_start(name, kind, why):
    """The data directory belongs to the server's user; a start, as root, hands what is in it
    to that user. With fs.protected_hardlinks=0 (the kernel's default) that user can link any
    host file into it under a database file's name. A root-owned canary stands for the host
    file: it must keep its owner, mode and contents, and the server must refuse to start with
    a message that names the file and the reason."""
    import pwd
    try:
        user = pwd.getpwnam("envicutor")
    except KeyError:  # made by a server's first start
        Server().start().stop()
        user = pwd.getpwnam("envicutor")
    sysctl = "/proc/sys/fs/protected_hardlinks"
    with open(sysctl) as f:
        saved = f.read().strip()
    canary_dir = tempfile.mkdtemp(prefix="envicutor-canary-", dir="/tmp")
    canary = os.path.join(canary_dir, "shadow")
    with open(canary, "w") as f:
        f.write("root:secret-hash:19000::::::\n")
    os.chmod(canary, 0o640)
    os.chmod(canary_dir, 0o755)
    before = os.stat(canary)
    # as a start leaves it: the server user's, mode 0700
    data_dir = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    s = Server(data_dir=data_dir)
    refusal = None
    try:
        with open(sysctl, "w") as f:
            f.write("0")
        plant = os.link if kind == "hard link" else os.symlink
        assert _as_user(user.pw_uid, user.pw_gid,
                        lambda: plant(canary, os.path.join(data_dir, name))) == 0
        try:
            s.start()
        except RuntimeError as e:
            refusal = str(e)
    finally:
        with open(sysctl, "w") as f:
            f.write(saved)
        s.stop()
        after = os.stat(canary)
        with open(canary) as f:
            content = f.read()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(canary_dir, ignore_errors=True)
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == \
        (0, 0, stat.S_IMODE(before.st_mode))
    assert content == "root:secret-hash:19000::::::\n"
    assert refusal is not None, "the server started"
    assert f"{data_dir}/{name} {why}" in refusal, refusal


# ---- what a box learns of the host through its init -------------------------------------------

def test_the_box_sees_nothing_of_the_helpers_command_line(srv, bash):
    """init, PID 1 of a box, is a clone of the privileged helper, whose command line names the
    host's runtimes directory (in the data directory). Whatever of /proc/1 a box may read
    shows nothing of it."""
    with open(f"/proc/{srv.helper_pid()}/cmdline") as f:
        helper_args = [a for a in f.read().split("\0") if a]
    assert any(srv.data_dir in a for a in helper_args)  # what must not reach the box
    run = stage(srv.execute(bash, "cat /proc/1/cmdline /proc/1/comm /proc/1/status; "
                                  "for f in environ maps; do cat /proc/1/$f; done; "
                                  "for l in exe cwd root; do readlink /proc/1/$l; done; "
                                  "echo end"))
    seen = run["stdout"] + run["stderr"]
    assert "\nState:" in seen and run["stdout"].endswith("end\n"), seen  # /proc/1 was read
    for a in helper_args + [srv.data_dir, "privileged", "envicutor", "runtimes"]:
        assert a not in seen, (a, seen)
    check_host(srv)
