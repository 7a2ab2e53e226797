"""Start-up, configuration, privilege separation, persistence across restarts and kill -9,
and bounded request bodies."""
import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN, CATALOG, Server, wait_no_residue


def quiet_post(url, body, timeout):
    """A request whose server is about to be killed: its failure is expected."""
    try:
        requests.post(url, json=body, timeout=timeout)
    except requests.RequestException:
        pass


def proc_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]


def test_http_code_does_not_run_as_root():
    s = Server().start()
    try:
        assert all(u != 0 for u in proc_uid(s.proc.pid)), "the HTTP server kept root"
        assert proc_uid(s.helper_pid())[0] == 0
        st = os.stat(s.data_dir)
        assert st.st_uid != 0 and st.st_mode & 0o077 == 0
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("var,value", [
    ("PORT", "http"), ("RUN_WALL_TIME", "-1"), ("COMPILE_MEMORY", "lots"),
    ("MAX_CONCURRENT_SUBMISSIONS", "0"), ("RUN_CPU_TIME", "1e999"),
    ("INSTALLATION_TIMEOUT", "1.5"),
    # longer than the path buffer: refused by name, never cut to a different path
    ("ENVICUTOR_CATALOG", "/" + "c" * 600),
])
def test_bad_configuration_stops_the_start(var, value):
    p = subprocess.run([BIN, "serve"], env={var: value, "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    assert var in p.stderr.decode()


def test_must_be_root():
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN,
                        "serve"], env={"PORT": "1"}, capture_output=True, timeout=10)
    assert p.returncode != 0 and "root" in p.stderr.decode()


def test_help():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0 and b"MAX_CONCURRENT_SUBMISSIONS" in p.stdout


def test_oversized_body_413():
    s = Server(MAX_REQUEST_SIZE=100000).start()
    try:
        r = s.post("/execute", {"runtime_id": 1, "source_code": "x" * 200000})
        assert r.status_code == 413 and "larger" in r.json()["message"]
        r = s.post("/execute", {"runtime_id": s.runtimes()["Bash"], "source_code": "echo small"})
        assert r.status_code == 200
    finally:
        assert s.stop() == 0


def test_restart_keeps_runtimes_and_not_the_catalog_again():
    s = Server().start()
    rid = s.add_host_runtime("Kept", "cat in.txt", "in.txt", env={"A": "1"})
    bash = s.runtimes()["Bash"]
    assert s.delete(f"/runtimes/{bash}").status_code == 200
    before = s.get("/runtimes").json()
    assert s.stop() == 0
    s2 = Server(data_dir=s.data_dir).start()
    try:
        assert s2.get("/runtimes").json() == before  # the deleted catalog entry stays deleted
        assert s2.execute(rid, "persisted").json()["run"]["stdout"] == "persisted\n"
    finally:
        assert s2.stop() == 0


def store_state(data_dir):
    db = sqlite3.connect(os.path.join(data_dir, "envicutor.db"))
    rows = {r[0]: r[1] for r in db.execute("SELECT name, dir FROM runtimes")}
    db.close()
    dirs = set(os.listdir(os.path.join(data_dir, "runtimes")))
    return rows, dirs


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08])
def test_kill_9_during_install_leaves_no_half_runtime(delay):
    s = Server(ENVICUTOR_CATALOG="/nonexistent").start()
    body = {"name": "Racy", "provider": "host", "run_script": "cat x", "source_file_name": "x"}
    t = threading.Thread(target=quiet_post, args=(s.url + "/runtimes", body, 10))
    t.start()
    time.sleep(delay)
    s.stop(signal.SIGKILL)
    t.join()
    s2 = Server(data_dir=s.data_dir, ENVICUTOR_CATALOG="/nonexistent").start()
    try:
        rows, dirs = store_state(s.data_dir)
        assert set(rows.values()) == dirs  # every row has its directory, no orphan directory
        names = s2.runtimes()
        if "Racy" in names:
            assert sorted(os.listdir(os.path.join(s.data_dir, "runtimes", rows["Racy"]))) == \
                ["compile.sh", "run.sh"]
            assert s2.execute(names["Racy"], "whole").json()["run"]["stdout"] == "whole\n"
    finally:
        assert s2.stop() == 0
    assert wait_no_residue() == ([], [], [])


def test_kill_9_with_a_run_in_flight_then_restart_cleans():
    s = Server().start()
    bash = s.runtimes()["Bash"]
    t = threading.Thread(target=quiet_post, args=(
        s.url + "/execute", {"runtime_id": bash, "source_code": "sleep 100"}, 30))
    t.start()
    time.sleep(0.5)
    s.stop(signal.SIGKILL)
    t.join()
    s2 = Server(data_dir=s.data_dir).start()
    try:
        assert wait_no_residue() == ([], [], [])
    finally:
        assert s2.stop() == 0
