"""Every limit, over and under, and every metric against a known truth."""
import pytest

from conftest import prog, sandbox

pytestmark = pytest.mark.usefixtures("no_residue")


def test_exit_code_and_output():
    r = sandbox("sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r["stdout"], r["stderr"]) == ("out\n", "err\n")
    assert (r["exit_code"], r["exit_signal"], r["exit_status"]) == (3, None, "RE")
    assert r["exit_message"] == "Exited with error status 3"


def test_clean_exit_has_null_status():
    r = sandbox("true")
    assert (r["exit_code"], r["exit_status"], r["exit_message"]) == (0, None, None)
    # nothing of the sandbox's own set-up is counted
    assert r["cpu_time"] < 0.02
    assert r["wall_time"] < 0.1


def test_signal():
    r = sandbox("sh", "-c", "kill -SEGV $$")
    assert (r["exit_code"], r["exit_signal"], r["exit_status"]) == (None, 11, "SG")


def test_command_not_found():
    r = sandbox("no-such-command")
    assert (r["exit_code"], r["exit_status"]) == (127, "RE")
    assert "no-such-command" in r["exit_message"]


def test_cpu_time_measured_across_threads_and_children():
    # 2 processes x 2 threads x 0.3 s = 1.2 s of CPU, which the program measures itself
    r = sandbox(prog("burn"), "0.3", "2", "1", opts=["--cpu-time", "5"])
    assert r["exit_status"] is None, r
    own = float(r["stdout"])
    assert own >= 1.2
    assert abs(r["cpu_time"] - own) < 0.05 + 0.02 * own


def test_cpu_limit_cannot_be_hidden_in_threads():
    r = sandbox(prog("burn"), "5", "4", "1", opts=["--cpu-time", "0.5", "--extra-time", "0.2"])
    assert r["exit_status"] == "TO"
    assert r["exit_message"] == "Time limit exceeded"
    assert r["exit_signal"] == 9
    assert 0.7 <= r["cpu_time"] < 1.0


def test_extra_time_is_grace_but_still_a_time_limit():
    r = sandbox(prog("burn"), "0.6", "1", "0",
                opts=["--cpu-time", "0.4", "--extra-time", "1"])
    assert r["exit_code"] == 0  # it finished inside the grace ...
    assert r["exit_status"] == "TO"  # ... and is still over its limit
    assert 0.59 <= r["cpu_time"] < 0.7  # the first microseconds may fall before the baseline


def test_under_cpu_limit():
    r = sandbox(prog("burn"), "0.3", "1", "0", opts=["--cpu-time", "1", "--extra-time", "0"])
    assert r["exit_status"] is None
    assert 0.29 <= r["cpu_time"] < 0.35


def test_wall_time_limit():
    r = sandbox("sleep", "10", opts=["--wall-time", "0.5"])
    assert r["exit_status"] == "TO"
    assert r["exit_message"] == "Time limit exceeded (wall clock)"
    assert 0.5 <= r["wall_time"] < 0.8
    assert r["cpu_time"] < 0.05


def test_under_wall_time_limit():
    r = sandbox("sleep", "0.3", opts=["--wall-time", "2"])
    assert r["exit_status"] is None
    assert 0.3 <= r["wall_time"] < 0.5


def test_memory_peak_is_measured():
    r = sandbox(prog("touch_mem"), "64", opts=["--memory", "256000"])
    assert r["exit_status"] is None, r
    mb64 = 64 * 1024
    assert mb64 <= r["memory"] <= mb64 * 1.05 + 2048
    assert r["memory_limit_exceeded"] is False


def test_memory_limit_kills_and_is_marked():
    r = sandbox(prog("touch_mem"), "200", opts=["--memory", "65536"])
    assert (r["exit_signal"], r["exit_status"]) == (9, "SG")
    assert r["memory_limit_exceeded"] is True
    assert r["exit_message"] == "Memory limit exceeded"
    assert r["memory"] <= 65536 + 64


def two_processes_holding(megabytes, memory_kb):
    """Two processes that each touch their memory, tell the other through one FIFO and wait
    for the other's word through another before they exit: both hold their memory at once,
    however they are scheduled. (Redirections open in order, so the two open each FIFO's ends
    in the same order and neither waits for the other to open.)"""
    tm = prog("touch_mem")
    return sandbox("sh", "-c", f"mkfifo /tmp/a /tmp/b && "
                   f"{{ {tm} {megabytes} --meet 4</tmp/b 3>/tmp/a & "
                   f"{tm} {megabytes} --meet 3>/tmp/b 4</tmp/a & wait; }}",
                   opts=["--memory", str(memory_kb)])


def test_memory_is_for_the_whole_run():
    # two processes of 40 MB each do not fit in 64 MB even though each alone would
    r = two_processes_holding(40, 65536)
    assert r["memory_limit_exceeded"] is True, r
    # the construction itself: with room for both, both touch their memory, meet and exit
    r = two_processes_holding(40, 200000)
    assert r["memory_limit_exceeded"] is False and r["exit_status"] is None, r
    assert r["stdout"] == "ok 41943040\n" * 2
    assert r["memory"] >= 80 * 1024


@pytest.mark.parametrize("kind", ["threads", "procs"])
def test_process_limit_counts_threads_and_processes(kind):
    r = sandbox(prog("spawn"), kind, "100", opts=["--max-number-of-processes", "10"])
    assert int(r["stdout"]) == 9  # the main process is the tenth


@pytest.mark.parametrize("kind", ["threads", "procs"])
def test_under_process_limit(kind):
    r = sandbox(prog("spawn"), kind, "20", opts=["--max-number-of-processes", "30"])
    assert int(r["stdout"]) == 20


def test_fork_bomb_is_contained():
    r = sandbox("bash", "-c", "b() { b | b & }; b; sleep 1",
                opts=["--max-number-of-processes", "32", "--wall-time", "3"])
    assert r["exit_status"] in (None, "RE", "TO")
    assert r["wall_time"] < 3.5


def test_open_files_limit():
    assert int(sandbox(prog("open_files"), opts=["--max-open-files", "20"])["stdout"]) == 20
    assert int(sandbox(prog("open_files"), opts=["--max-open-files", "100"])["stdout"]) == 100


def test_file_size_limit():
    r = sandbox("sh", "-c", "exec head -c 2000000 /dev/zero > /box/f",
                opts=["--max-file-size", "1000"])
    assert (r["exit_status"], r["exit_signal"]) == ("SG", 25)  # SIGXFSZ
    r = sandbox("sh", "-c", "head -c 500000 /dev/zero > /box/f; wc -c < /box/f",
                opts=["--max-file-size", "1000"])
    assert r["stdout"].strip() == "500000"


def test_box_disk_usage_is_bounded():
    r = sandbox("sh", "-c", "for i in 1 2 3 4 5 6; do head -c 1000000 /dev/zero > /box/f$i "
                "|| exit 7; done", opts=["--disk-size", "4096"])
    assert r["exit_code"] == 7
    assert "No space left" in r["stderr"]


def test_box_inodes_are_bounded():
    r = sandbox("sh", "-c", "i=0; while [ $i -lt 500 ]; do touch /box/f$i || exit 7; "
                "i=$((i+1)); done", opts=["--max-inodes", "100"])
    assert r["exit_code"] == 7
    assert "No space left" in r["stderr"]


def test_tmp_is_size_limited():
    r = sandbox("sh", "-c", "head -c 3000000 /dev/zero > /tmp/f || exit 7",
                opts=["--tmp-size", "1024"])
    assert r["exit_code"] == 7


def test_stack_limit_and_no_core_dumps():
    r = sandbox("sh", "-c", "ulimit -s; ulimit -c", opts=["--stack", "8192"])
    assert r["stdout"].split() == ["8192", "0"]


def test_stdin_from_a_large_file(tmp_path):
    data = bytes(range(256)) * 40000  # 10 MB
    f = tmp_path / "in"
    f.write_bytes(data)
    r = sandbox("sha256sum", opts=["--stdin", str(f)])
    import hashlib
    assert r["stdout"].split()[0] == hashlib.sha256(data).hexdigest()


def test_megabytes_on_both_streams_do_not_deadlock():
    r = sandbox("sh", "-c", "i=0; while [ $i -lt 40 ]; do head -c 100000 /dev/zero | tr '\\0' a; "
                "head -c 100000 /dev/zero | tr '\\0' b >&2; i=$((i+1)); done",
                opts=["--wall-time", "20"])
    assert r["exit_status"] is None
    assert r["stdout"] == "a" * 4000000 and r["stderr"] == "b" * 4000000


def test_output_cap_truncates_a_flood():
    r = sandbox("yes", opts=["--max-output-size", "1000", "--wall-time", "1"])
    assert r["exit_status"] == "TO"
    assert r["stdout"] == "y\n" * 500
    assert r["stdout_truncated"] is True and r["stderr_truncated"] is False


def test_non_utf8_output_is_replaced_not_dropped():
    r = sandbox("printf", "a\\377b\\000c")
    assert r["stdout"] == "a\ufffdb\x00c"


def test_bad_options_are_refused():
    for opts in (["--cpu-time", "nan"], ["--cpu-time", "-1"], ["--cpu-time", "0"],
                 ["--wall-time", "inf"], ["--memory", "12abc"], ["--memory", "-5"],
                 ["--max-open-files", "99999999999999999999"], ["--env", "NOEQUALS"]):
        p = sandbox("true", opts=opts, check=False)
        assert p.returncode == 2, opts
        assert p.stderr.decode().startswith("envicutor sandbox: "), opts
        assert p.stdout == b""


def test_sandbox_failures_exit_1_with_the_reason():
    for opts, reason in ((["--mount", "/nonexistent-src:/extra"], "mount /nonexistent-src"),
                         (["--workdir", "/nonexistent"], "working directory /nonexistent"),
                         (["--mount", "/usr:/etc/x"], "inside /etc"),
                         (["--stdin", "/nonexistent-input"], "stdin file")):
        p = sandbox("true", opts=opts, check=False)
        assert p.returncode == 1, opts
        assert reason in p.stderr.decode(), p.stderr
        assert p.stdout == b""


def test_smallest_open_files_limit_still_starts_the_program():
    r = sandbox("sh", "-c", "echo ok", opts=["--max-open-files", "4"])
    assert (r["exit_status"], r["stdout"]) == (None, "ok\n")
