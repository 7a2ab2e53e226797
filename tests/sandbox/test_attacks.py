"""Hostile programs against the sandbox alone: escapes, channels between two boxes running at
the same time, and resource tricks. Each test checks the verdict and the host afterwards (the
no_residue fixture)."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, sandbox

pytestmark = pytest.mark.usefixtures("no_residue")


def pair(first, second, delay=0.3):
    """Runs `first` in one box and, `delay` seconds later, `second` in another, both at once;
    returns both results."""
    a = subprocess.Popen([BIN, "sandbox", "--wall-time", "10", "--", "sh", "-c", first],
                         stdout=subprocess.PIPE)
    time.sleep(delay)
    b = subprocess.Popen([BIN, "sandbox", "--wall-time", "10", "--", "sh", "-c", second],
                         stdout=subprocess.PIPE)
    return json.loads(a.communicate(timeout=30)[0]), json.loads(b.communicate(timeout=30)[0])


def test_kill_all_reaches_only_its_own_box():
    a, b = pair("sleep 1.5; echo alive", "kill -9 -1; echo sent")
    assert a["stdout"] == "alive\n" and a["exit_status"] is None


def test_tcp_port_of_another_box_is_unreachable():
    server = ("python3 -c \"import socket,time; s=socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('127.0.0.1', 47123)); s.listen(); s.settimeout(1.5)\n"
              "try: s.accept(); print('accepted')\nexcept OSError: print('nobody')\"")
    client = ("python3 -c \"import socket\ntry: socket.create_connection(('127.0.0.1', 47123), "
              "timeout=1); print('connected')\nexcept OSError: print('refused')\"")
    a, b = pair(server, client)
    assert (a["stdout"], b["stdout"]) == ("nobody\n", "refused\n")


def test_abstract_unix_socket_of_another_box_is_unreachable():
    server = ("python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); "
              "s.bind(b'\\0envicutor-channel'); s.listen(); s.settimeout(1.5)\n"
              "try: s.accept(); print('accepted')\nexcept OSError: print('nobody')\"")
    client = ("python3 -c \"import socket; c=socket.socket(socket.AF_UNIX)\n"
              "try: c.connect(b'\\0envicutor-channel'); print('connected')\n"
              "except OSError: print('refused')\"")
    a, b = pair(server, client)
    assert (a["stdout"], b["stdout"]) == ("nobody\n", "refused\n")


def test_sysv_ipc_of_another_box_is_invisible():
    a, b = pair("ipcmk -Q >/dev/null && ipcmk -M 4096 >/dev/null && ipcs -q -m | grep -c '^0x'; "
                "sleep 1.5", "ipcs -q -m | grep -c '^0x'")
    assert a["stdout"].strip() == "2"
    assert b["stdout"].strip() == "0"


def test_tmp_and_dev_shm_of_another_box_are_invisible():
    a, b = pair("echo secret > /dev/shm/x; echo secret > /tmp/y; sleep 1.5",
                "cat /dev/shm/x /tmp/y 2>&1; ls -A /dev/shm/ /tmp/")
    assert "secret" not in b["stdout"]


def test_setuid_programs_do_not_give_root():
    assert os.stat("/usr/bin/su").st_mode & 0o4000  # setuid on the host
    r = sandbox("sh", "-c", "/usr/bin/su -c 'id -u' root </dev/null; echo rc=$?; "
                "/usr/bin/newgrp root </dev/null; echo rc=$?")
    assert "rc=0" not in r["stdout"]
    assert "\n0\n" not in "\n" + r["stdout"]


def test_init_of_the_box_is_out_of_reach():
    # PID 1 is the sandbox's init, running as root: its files, memory and descriptors are
    # closed to the box user, and it cannot be signalled.
    r = sandbox("sh", "-c", "ls /proc/1/root/ 2>&1; cat /proc/1/environ 2>&1; ls /proc/1/fd 2>&1; "
                "kill -9 1 2>&1; echo rc=$?")
    assert r["stdout"].count("Permission denied") >= 3
    assert "Operation not permitted" in r["stdout"] and "rc=0" not in r["stdout"]


def test_no_dns_and_no_route_out():
    r = sandbox("python3", "-c", "import socket\n"
                "try: socket.getaddrinfo('debian.org', 80); print('resolved')\n"
                "except OSError: print('no dns')\n"
                "try: socket.create_connection(('1.1.1.1', 53), timeout=1); print('out')\n"
                "except OSError: print('no route')", opts=["--wall-time", "10"])
    assert r["stdout"] == "no dns\nno route\n"


def test_clock_cannot_be_set():
    before = time.time()
    r = sandbox("date", "-s", "2001-01-01")
    assert r["exit_status"] == "RE"
    assert abs(time.time() - before) < 60


def test_memory_through_tmp_counts_against_the_memory_limit():
    r = sandbox("sh", "-c", "head -c 150000000 /dev/zero > /tmp/fill && echo wrote",
                opts=["--memory", "65536", "--tmp-size", "500000"])
    assert r["stdout"] != "wrote\n"
    assert r["memory"] <= 65536 + 64


def test_leaving_the_cgroup_is_impossible():
    r = sandbox("sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup 2>&1; "
                "echo $$ > /sys/fs/cgroup/cgroup.procs 2>&1; echo rc=$?")
    assert "rc=0" not in r["stdout"]
    for line in r["stdout"].splitlines():
        if line.count(":") >= 2 and line[0].isdigit():
            assert line.split(":", 2)[2] == "/"  # the box's own cgroup namespace root
