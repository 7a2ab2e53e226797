"""The API extensions of issue 4 (README "API extensions"), through HTTP to real servers:
output caps, bounds on limits, per-runtime limits, chosen ids, runtime info and its hash,
API keys, queue-full answers, large bodies and base64 output."""
import base64
import os
import sqlite3
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import BIN, Server


def raw_execute(server, body, query=""):
    return requests.post(server.url + "/execute" + query, data=body,
                         headers={"Content-Type": "application/json"}, timeout=60)


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


# ---- 2. bounds on limits ------------------------------------------------------------------

TIME_RANGE = "must be a number of seconds from 0.000001 to {}"


@pytest.mark.parametrize("limit,value,message", [
    ("wall_time", 0, TIME_RANGE.format(60)),
    ("wall_time", -1, TIME_RANGE.format(60)),
    ("cpu_time", -0.0, TIME_RANGE.format(30)),
    ("cpu_time", 1e-9, TIME_RANGE.format(30)),       # rounds to 0 microseconds
    ("wall_time", "10", TIME_RANGE.format(60)),
    ("wall_time", True, TIME_RANGE.format(60)),
    ("wall_time", [1], TIME_RANGE.format(60)),
    ("wall_time", {"v": 1}, TIME_RANGE.format(60)),
    ("extra_time", -0.5, "must be a number of seconds from 0 to 5"),
    ("extra_time", "0", "must be a number of seconds from 0 to 5"),
    ("memory", 0, "must be a whole number of kilobytes from 1 to 1000000"),
    ("memory", -5, "must be a whole number of kilobytes from 1 to 1000000"),
    ("memory", 1.5, "must be a whole number of kilobytes from 1 to 1000000"),
    ("memory", "1000", "must be a whole number of kilobytes from 1 to 1000000"),
    ("memory", False, "must be a whole number of kilobytes from 1 to 1000000"),
    ("max_open_files", 0, "must be a whole number from 1 to 64"),
    ("max_number_of_processes", -1, "must be a whole number from 1 to 64"),
    ("max_file_size", 0.5, "must be a whole number of kilobytes from 1 to 100000"),
    # finite but overflowing once converted to microseconds or bytes
    ("wall_time", 1e300, "can't exceed 60 seconds"),
    ("memory", 1e300, "can't exceed 1000000 kilobytes"),
    ("memory", 2 ** 62, "can't exceed 1000000 kilobytes"),
    ("max_open_files", 2 ** 63 - 1, "can't exceed 64"),
    ("cpu_time", 18446744073709.551616, "can't exceed 30 seconds"),
])
def test_limit_bounds(server, limit, value, message):
    bash = server.runtimes()["Bash"]
    r = server.execute(bash, "true", run_limits={limit: value})
    assert r.status_code == 400, r.text
    assert r.json() == {"message": f"Invalid run limits: {limit} {message}"}


@pytest.mark.parametrize("literal,expected", [
    ("1e400", "real number overflow"),          # what a client sends for Infinity
    ("-1e400", "real number overflow"),
    ("99999999999999999999999", "too big integer"),
    ("NaN", "Invalid JSON"),
    ("Infinity", "Invalid JSON"),
])
def test_limits_json_cannot_carry(server, literal, expected):
    bash = server.runtimes()["Bash"]
    r = raw_execute(server, '{"runtime_id": %d, "source_code": "true", "run_limits": '
                            '{"memory": %s}}' % (bash, literal))
    assert r.status_code == 400
    assert r.json()["message"].startswith("Invalid JSON") and expected in r.json()["message"]


def test_limit_minimums_accepted(server):
    bash = server.runtimes()["Bash"]
    # the smallest values are accepted; the programs then fail with a verdict, not a 500
    r = server.execute(bash, "echo hi", run_limits={"wall_time": 0.000001, "extra_time": 0})
    assert r.status_code == 200 and r.json()["run"]["exit_status"] in ("TO", "XX", "SG")
    r = server.execute(bash, "echo hi", run_limits={"cpu_time": 1e-6, "extra_time": -0.0})
    assert r.status_code == 200


# ---- 7. queue full ------------------------------------------------------------------------

def test_queue_full_503_retry_after():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUE_SIZE=1).start()
    try:
        bash = s.runtimes()["Bash"]
        res = []
        threads = [threading.Thread(target=lambda: res.append(s.execute(bash, "sleep 1.5")))
                   for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.3)
        t0 = time.time()
        r = s.execute(bash, "true")
        took = time.time() - t0
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert "queue" in r.json()["message"]
        assert took < 1.0, took  # at once: a place frees only after 1.5 s
        for t in threads:
            t.join()
        assert [x.status_code for x in res] == [200, 200]
    finally:
        assert s.stop() == 0


def test_queue_size_zero_and_old_name():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUED_REQUESTS=0).start()
    try:
        bash = s.runtimes()["Bash"]
        t = threading.Thread(target=lambda: s.execute(bash, "sleep 1"))
        t.start()
        time.sleep(0.4)
        r = s.execute(bash, "true")
        assert r.status_code == 503 and r.headers.get("Retry-After") == "1"
        t.join()
    finally:
        assert s.stop() == 0


def test_bad_queue_size_stops_the_start():
    p = subprocess.run([BIN, "serve"], env={"MAX_QUEUE_SIZE": "-1",
                                            "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode != 0 and b"MAX_QUEUE_SIZE" in p.stderr


# ---- 1. output caps -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def capped():
    s = Server(MAX_OUTPUT_SIZE=1000, MAX_CONCURRENT_SUBMISSIONS=2).start()
    yield s
    assert s.stop() == 0


def test_output_is_cut_per_stream(capped):
    bash = capped.runtimes()["Bash"]
    j = capped.execute(bash, "head -c 5000 /dev/zero | tr '\\0' a; head -c 300 /dev/zero | "
                             "tr '\\0' b >&2").json()["run"]
    assert j["stdout"] == "a" * 1000 and j["stdout_truncated"] is True
    assert j["stderr"] == "b" * 300 and j["stderr_truncated"] is False
    assert j["exit_status"] is None
    j = capped.execute(bash, "printf 'x%.0s' {1..1000}").json()["run"]
    assert len(j["stdout"]) == 1000 and j["stdout_truncated"] is False


def test_server_memory_bounded_whatever_a_program_prints(capped):
    bash = capped.runtimes()["Bash"]
    helper = capped.helper_pid()
    before = vm_rss_kb(capped.proc.pid) + vm_rss_kb(helper)
    # about a gigabyte per stream, as fast as it goes, for two seconds
    j = capped.execute(bash, "yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa & yes bbbbbbbbbbbbbbbbb >&2",
                       run_limits={"wall_time": 2}).json()["run"]
    assert j["exit_status"] == "TO"
    assert j["stdout_truncated"] and j["stderr_truncated"]
    assert len(j["stdout"]) == 1000 and len(j["stderr"]) == 1000
    after = vm_rss_kb(capped.proc.pid) + vm_rss_kb(helper)
    assert after - before < 20000, (before, after)
    assert vm_hwm_kb(capped.proc.pid) + vm_hwm_kb(helper) < 200000


# ---- 9. base64 output ---------------------------------------------------------------------

def test_base64_output(server):
    bash = server.runtimes()["Bash"]
    src = "printf '\\x00\\xff\\x80ok'; printf '\\xfe' >&2"
    j = server.execute(bash, src).json()["run"]
    assert j["stdout"] == "\x00\ufffd\ufffdok"
    r = server.post("/execute?base64_output=true", {"runtime_id": bash, "source_code": src})
    j = r.json()["run"]
    assert base64.b64decode(j["stdout"]) == b"\x00\xff\x80ok"
    assert base64.b64decode(j["stderr"]) == b"\xfe"
    r = server.post("/execute?base64_output=false", {"runtime_id": bash, "source_code": src})
    assert r.json()["run"]["stdout"] == "\x00\ufffd\ufffdok"


def test_base64_output_of_compile_stage(server):
    c = server.runtimes()["C"]
    r = server.post("/execute?base64_output=true",
                    {"runtime_id": c, "source_code": "int main(void) { return x; }"})
    j = r.json()
    assert j["run"] is None
    assert b"error" in base64.b64decode(j["compile"]["stderr"])


# ---- 4. optional id -----------------------------------------------------------------------

def host_runtime(name, **extra):
    body = {"name": name, "provider": "host", "run_script": "bash main.sh",
            "source_file_name": "main.sh"}
    body.update(extra)
    return body


def test_runtime_with_chosen_id(server):
    r = server.post("/runtimes", host_runtime("chosen id", id=424242))
    assert r.status_code == 200, r.text
    assert server.runtimes()["chosen id"] == 424242
    assert server.execute(424242, "echo hi").json()["run"]["stdout"] == "hi\n"
    r = server.post("/runtimes", host_runtime("another name", id=424242))
    assert r.status_code == 400
    assert r.json() == {"message": "A runtime with id 424242 already exists"}
    assert "another name" not in server.runtimes()
    # ids after a chosen one continue above it
    r = server.post("/runtimes", host_runtime("after chosen"))
    assert r.status_code == 200 and server.runtimes()["after chosen"] > 424242
    assert server.delete("/runtimes/424242").status_code == 200
    assert server.delete(f"/runtimes/{server.runtimes()['after chosen']}").status_code == 200


@pytest.mark.parametrize("bad", [0, -3, 1.5, "7", True, 2 ** 53])
def test_runtime_bad_id(server, bad):
    r = server.post("/runtimes", host_runtime("bad id", id=bad))
    assert r.status_code == 400
    assert r.json() == {"message": "id must be an integer from 1 to 9007199254740991"}


# ---- 3. limits per runtime ----------------------------------------------------------------

def test_runtime_limits_are_default_and_maximum(server):
    r = server.post("/runtimes", host_runtime(
        "tight", run_limits={"memory": 262144, "max_open_files": 20, "wall_time": 1.5},
        compile_limits={"cpu_time": 2}))
    assert r.status_code == 200, r.text
    rid = server.runtimes()["tight"]
    try:
        r = server.execute(rid, "true", run_limits={"memory": 300000})
        assert r.status_code == 400
        assert r.json() == {"message": "Invalid run limits: memory can't exceed 262144 kilobytes"}
        r = server.execute(rid, "true", run_limits={"wall_time": 2})
        assert r.json() == {"message": "Invalid run limits: wall_time can't exceed 1.5 seconds"}
        r = server.execute(rid, "true", compile_limits={"cpu_time": 3})
        assert r.json() == {"message": "Invalid compile limits: cpu_time can't exceed 2 seconds"}
        r = server.execute(rid, "true", run_limits={"memory": 0})
        assert r.json() == {"message": "Invalid run limits: memory must be a whole number of "
                                       "kilobytes from 1 to 262144"}
        # omitted: the runtime's values
        j = server.execute(rid, "ulimit -n").json()["run"]
        assert j["stdout"] == "20\n"
        j = server.execute(rid, "sleep 5").json()["run"]
        assert j["exit_status"] == "TO" and j["wall_time"] < 3
        # lower than the runtime's: allowed
        assert server.execute(rid, "ulimit -n", run_limits={"max_open_files": 12}).json()[
            "run"]["stdout"] == "12\n"
        # other runtimes keep the system's
        bash = server.runtimes()["Bash"]
        assert server.execute(bash, "ulimit -n").json()["run"]["stdout"] == "64\n"
    finally:
        server.delete(f"/runtimes/{rid}")


@pytest.mark.parametrize("stage,limits,message", [
    ("run", {"memory": 1000001}, "Invalid run limits: memory can't exceed 1000000 kilobytes"),
    ("compile", {"max_open_files": 513}, "Invalid compile limits: max_open_files can't exceed 512"),
    ("run", {"wall_time": 0}, "Invalid run limits: wall_time must be a number of seconds from "
                              "0.000001 to 60"),
    ("run", {"colour": 1}, "Invalid run limits: unknown limit colour"),
    ("run", "x", "run_limits must be an object"),
])
def test_runtime_limits_validated_against_the_system(server, stage, limits, message):
    r = server.post("/runtimes", host_runtime("over", **{stage + "_limits": limits}))
    assert r.status_code == 400 and r.json() == {"message": message}
    assert "over" not in server.runtimes()


# ---- 5. runtime info ----------------------------------------------------------------------

def test_runtime_info(server):
    r = server.post("/runtimes", host_runtime("info", compile_script="true",
                                              env={"B": "2", "A": "x=y\nz"},
                                              run_limits={"memory": 131072}))
    assert r.status_code == 200
    rid = server.runtimes()["info"]
    try:
        j = server.get(f"/runtimes/{rid}").json()
        assert j["id"] == rid and j["name"] == "info" and j["provider"] == "host"
        assert j["compile_script"] == "true" and j["run_script"] == "bash main.sh"
        assert j["source_file_name"] == "main.sh" and j["nix_shell"] == ""
        assert j["env"] == {"B": "2", "A": "x=y\nz"}
        assert j["run_limits"] == {"wall_time": 60, "cpu_time": 30, "memory": 131072,
                                   "extra_time": 5, "max_open_files": 64,
                                   "max_file_size": 100000, "max_number_of_processes": 64}
        assert j["compile_limits"]["memory"] == 1000000
        assert j["runtime_run_limits"] == {"memory": 131072}
        assert j["runtime_compile_limits"] == {}
        assert j["created_at"].endswith("Z") and len(j["created_at"]) == 20
        assert j["hash"].startswith("sha256:") and len(j["hash"]) == 71
    finally:
        server.delete(f"/runtimes/{rid}")
    assert server.get(f"/runtimes/{rid}").status_code == 404
    assert server.get("/runtimes/987654").json() == {
        "message": "Could not find the specified runtime"}
    assert server.get("/runtimes/abc").status_code == 400


def test_runtime_hash_equal_exactly_when_behaviour_is(tmp_path):
    a = Server(ENVICUTOR_CATALOG="/nonexistent").start()
    b = Server(ENVICUTOR_CATALOG="/nonexistent").start()
    c = Server(ENVICUTOR_CATALOG="/nonexistent", RUN_MEMORY=500000).start()
    try:
        def add(s, name, **kw):
            r = s.post("/runtimes", host_runtime(name, **kw))
            assert r.status_code == 200, r.text
            return s.get(f"/runtimes/{s.runtimes()[name]}").json()["hash"]

        ha = add(a, "X", env={"A": "1", "B": "2"})
        # other name, other id, other creation time, env in another order: same hash
        b.post("/runtimes", host_runtime("filler"))
        time.sleep(1.1)
        hb = add(b, "Y", env={"B": "2", "A": "1"})
        assert ha == hb
        # a different script, env value or limit: another hash
        assert add(a, "X2", env={"A": "1", "B": "3"}) != ha
        assert add(a, "X3", env={"A": "1", "B": "2"}, compile_script="true") != ha
        assert add(a, "X4", env={"A": "1", "B": "2"}, run_limits={"memory": 500000}) != ha
        # a server whose system limit is what that runtime asked for: the same behaviour
        hc = add(c, "Z", env={"A": "1", "B": "2"})
        assert hc != ha
        assert hc == a.get(f"/runtimes/{a.runtimes()['X4']}").json()["hash"]
    finally:
        for s in (a, b, c):
            assert s.stop() == 0


def test_store_migrates_an_older_database():
    data = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    db = sqlite3.connect(os.path.join(data, "envicutor.db"))
    # the schema of the first version of the store
    db.executescript(
        "CREATE TABLE runtimes (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
        " provider TEXT NOT NULL, source_file_name TEXT NOT NULL, compile_script TEXT NOT NULL,"
        " run_script TEXT NOT NULL, nix_shell TEXT NOT NULL, env BLOB NOT NULL,"
        " dir TEXT NOT NULL UNIQUE);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('catalog_installed', '1');")
    db.execute("INSERT INTO runtimes (name, provider, source_file_name, compile_script, "
               "run_script, nix_shell, env, dir) VALUES ('Old', 'host', 'main.sh', '', "
               "'bash main.sh', '', X'', 'rt-0000000000000000')")
    db.commit()
    db.close()
    os.makedirs(os.path.join(data, "runtimes", "rt-0000000000000000"))
    for f in ("compile.sh", "run.sh"):
        with open(os.path.join(data, "runtimes", "rt-0000000000000000", f), "w") as fh:
            fh.write("" if f == "compile.sh" else "bash main.sh")
    os.chmod(os.path.join(data, "runtimes", "rt-0000000000000000"), 0o755)
    s = Server(data_dir=data).start()
    try:
        assert s.runtimes() == {"Old": 1}
        j = s.get("/runtimes/1").json()
        assert j["created_at"] is None and j["runtime_run_limits"] == {}
        assert s.execute(1, "echo old").json()["run"]["stdout"] == "old\n"
        r = s.post("/runtimes", host_runtime("New", run_limits={"max_open_files": 30}))
        assert r.status_code == 200
    finally:
        assert s.stop() == 0
    s = Server(data_dir=data).start()   # a migrated database opens again
    try:
        new = s.runtimes()["New"]
        assert s.get(f"/runtimes/{new}").json()["runtime_run_limits"] == {"max_open_files": 30}
        assert s.execute(new, "ulimit -n").json()["run"]["stdout"] == "30\n"
    finally:
        assert s.stop() == 0


# ---- 6. API keys --------------------------------------------------------------------------

ADMIN, ADMIN2, EXEC = "admin-key-0123456789", "second-admin-key", "execute-key-abcdef"


@pytest.fixture(scope="module")
def keyed():
    s = Server(ADMIN_API_KEYS=f"{ADMIN},{ADMIN2}", EXECUTE_API_KEYS=EXEC).start()
    yield s
    assert s.stop() == 0


def bearer(k):
    return {"Authorization": f"Bearer {k}"}


def test_keys_health_is_open(keyed):
    assert keyed.get("/health").status_code == 200


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    (bearer("wrong-key-123456"), 401),
    (bearer(ADMIN + "x"), 401),
    (bearer(ADMIN[:-1]), 401),
    ({"Authorization": ADMIN}, 401),                 # no "Bearer"
    ({"Authorization": f"Basic {ADMIN}"}, 401),
    (bearer(EXEC), 200),
    (bearer(ADMIN), 200),
    (bearer(ADMIN2), 200),
    ({"X-Auth-Token": EXEC}, 200),
    ({"X-Auth-Token": ADMIN}, 200),
])
def test_keys_list(keyed, headers, status):
    r = keyed.get("/runtimes", headers=headers)
    assert r.status_code == status
    if status == 401:
        assert "message" in r.json()


def test_keys_roles(keyed):
    e, a = bearer(EXEC), bearer(ADMIN)
    bash = keyed.get("/runtimes", headers=a).json()
    bash = [x["id"] for x in bash if x["name"] == "Bash"][0]
    # execute key: list, read, execute
    assert keyed.get(f"/runtimes/{bash}", headers=e).status_code == 200
    r = keyed.post("/execute", {"runtime_id": bash, "source_code": "echo k"}, headers=e)
    assert r.status_code == 200 and r.json()["run"]["stdout"] == "k\n"
    assert keyed.post("/execute", {"runtime_id": bash, "source_code": "echo k"}).status_code == 401
    # not: add, delete, update, gc
    body = host_runtime("keyed")
    r = keyed.post("/runtimes", body, headers=e)
    assert r.status_code == 403 and "admin" in r.json()["message"]
    assert keyed.post("/runtimes", body).status_code == 401
    assert keyed.delete(f"/runtimes/{bash}", headers=e).status_code == 403
    assert keyed.post("/update", headers=e).status_code == 403
    assert keyed.post("/gc", headers=e).status_code == 403
    assert keyed.post("/gc").status_code == 401
    # admin key: everything
    assert keyed.post("/runtimes", body, headers=a).status_code == 200
    rid = [x["id"] for x in keyed.get("/runtimes", headers=a).json() if x["name"] == "keyed"][0]
    assert keyed.delete(f"/runtimes/{rid}", headers={"X-Auth-Token": ADMIN2}).status_code == 200
    assert keyed.post("/update", headers=a).status_code in (200, 500)
    log = keyed.log_text()
    for k in (ADMIN, ADMIN2, EXEC):
        assert k not in log


def test_keys_refused_before_the_body_is_kept(keyed):
    r = requests.post(keyed.url + "/runtimes", data=b"x" * 5_000_000,
                      headers=bearer(EXEC), timeout=30)
    assert r.status_code == 403


@pytest.mark.parametrize("var,value", [
    ("ADMIN_API_KEYS", "goodkey123,,otherkey456"),
    ("ADMIN_API_KEYS", "goodkey123,"),
    ("ADMIN_API_KEYS", ""),
    ("EXECUTE_API_KEYS", " goodkey123"),
    ("EXECUTE_API_KEYS", "good key123"),
    ("EXECUTE_API_KEYS", "short"),
])
def test_bad_keys_stop_the_start(var, value):
    p = subprocess.run([BIN, "serve"], env={var: value, "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert var in err
    assert "goodkey123" not in err and "otherkey456" not in err


# ---- 8. large bodies ----------------------------------------------------------------------

def test_large_input_and_source(server):
    bash = server.runtimes()["Bash"]
    big = ("0123456789abcdef" * 65536 + "\n") * 20        # 20 MiB + 20 bytes
    r = server.execute(bash, "wc -c; md5sum main.sh | cut -c1-8", input=big,
                       run_limits={"wall_time": 30})
    assert r.status_code == 200, r.text[:300]
    out = r.json()["run"]["stdout"].split()
    assert out[0] == str(len(big))
    r = server.execute(bash, "# " + "x" * (30 << 20) + "\necho big source")
    assert r.status_code == 200 and r.json()["run"]["stdout"] == "big source\n"


def test_413_before_the_body_is_read():
    s = Server(MAX_REQUEST_SIZE=1 << 20).start()
    try:
        # Content-Length over the limit: answered at once, with Expect: 100-continue or not
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.putrequest("POST", "/execute")
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(1 << 30))
        c.endheaders()
        t0 = time.time()
        resp = c.getresponse()
        assert resp.status == 413 and time.time() - t0 < 2
        assert b"larger" in resp.read()
        c.close()
        # a chunked body is cut off at the limit
        def chunks():
            for _ in range(64):
                yield b"x" * (64 << 10)
        r = requests.post(s.url + "/execute", data=chunks(), timeout=30)
        assert r.status_code == 413
        # the server is fine afterwards
        assert s.execute(s.runtimes()["Bash"], "echo ok").json()["run"]["stdout"] == "ok\n"
    finally:
        assert s.stop() == 0


def test_peak_memory_of_a_64mb_input_below_three_times():
    s = Server(MAX_REQUEST_SIZE=80 << 20, MAX_CONCURRENT_SUBMISSIONS=1).start()
    try:
        bash = s.runtimes()["Bash"]
        helper = s.helper_pid()
        base = vm_rss_kb(s.proc.pid) + vm_rss_kb(helper)
        size = 64 << 20
        body = ('{"runtime_id": %d, "source_code": "wc -c", "input": "' % bash).encode() + \
            b"a" * size + b'", "run_limits": {"wall_time": 30}}'
        r = requests.post(s.url + "/execute", data=body, timeout=120)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["run"]["stdout"] == f"{size + 1}\n"
        peak = vm_hwm_kb(s.proc.pid) + vm_hwm_kb(helper)
        print(f"peak VmHWM server+helper: {peak} KB for a {size >> 10} KB input "
              f"(baseline RSS {base} KB)")
        assert peak < 3 * (size >> 10), peak
    finally:
        assert s.stop() == 0
