"""One proof per seccomp rule: each call is made harmlessly (bad descriptor or pointer), so an
allowed call fails with EBADF/EFAULT/EINVAL (or succeeds) and a refused one with the filter's
answer. The allowed controls show the test can tell the difference."""
import pytest

from conftest import prog, sandbox

pytestmark = pytest.mark.usefixtures("no_residue")

REFUSED = {
    "bpf": "EPERM", "perf_event_open": "EPERM", "userfaultfd": "EPERM",
    "io_uring_setup": "EPERM", "keyctl": "EPERM", "add_key": "EPERM", "mount": "EPERM",
    "unshare": "EPERM", "clone_newuser": "EPERM", "clone3": "ENOSYS", "ptrace": "EPERM",
    "init_module": "EPERM", "inotify_init1": "ENOSYS", "socket_packet": "EAFNOSUPPORT", "socket_netlink": "EAFNOSUPPORT",
}
ALLOWED = {"read": "EBADF", "socket_inet": "OK", "socket_unix": "OK"}


def results(*names):
    r = sandbox(prog("syscalls"), *names)
    assert r["exit_status"] is None, r
    return dict(line.split() for line in r["stdout"].splitlines())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(name):
    assert results(name) == {name: REFUSED[name]}


def test_allowed_controls():
    assert results(*ALLOWED) == ALLOWED


def test_non_native_abi_kills_the_process():
    r = sandbox(prog("syscalls"), "x32_getpid")
    assert (r["exit_status"], r["exit_signal"]) == ("SG", 31)  # SIGSYS


def test_threads_and_processes_still_work_with_clone_filtered():
    r = sandbox("python3", "-c", "import threading,subprocess; t=threading.Thread(target=print, "
                "args=('thread',)); t.start(); t.join(); subprocess.run(['echo','child'])")
    assert sorted(r["stdout"].split()) == ["child", "thread"]
