"""The runtime registry of a cluster (SPEC §10 "Runtimes", docs/cluster.md): runtimes added and
deleted through the API node are carried out by every live worker; a worker started later
installs them before it takes a job; a job runs only on a worker whose hash of its runtime is
the registry's. A real redis-server on loopback, one API node, workers with their own data
directories (the fixture of test_cluster.py)."""
import os
import re
import shutil
import signal
import socket
import json
import tempfile
import threading
import time

from conftest import Server
from test_cluster import RUNTIME_ID, TIMED, Worker, cluster, run  # noqa: F401 (a fixture)

ECHO = {"name": "Echo bash", "provider": "host", "run_script": "bash main.sh",
        "compile_script": "", "source_file_name": "main.sh"}


def names(ws):
    """The workers' names as they beat: the last start's of each."""
    return sorted(re.findall(r"envicutor: worker (\S+) of the cluster", w.log_text())[-1]
                  for w in ws)


def live(api, n):
    """Waits until n workers beat (a worker's heartbeat starts once it is in line with the
    registry)."""
    deadline = time.time() + 30
    while len(api.get("/health").json()["workers"]) != n:
        assert time.time() < deadline, api.get("/health").text
        time.sleep(0.05)


def wait_log(w, text, timeout=30):
    deadline = time.time() + timeout
    while text not in w.log_text():
        assert time.time() < deadline, w.log_text()
        time.sleep(0.05)


def extra_worker(redis, **env):
    catalog = tempfile.mkdtemp(prefix="envicutor-empty-catalog-")
    return Worker(redis, catalog, 1, **env), catalog


def remove_worker(w, catalog):
    rc = w.stop()
    log = w.log_text()
    os.unlink(w.log_path)
    shutil.rmtree(w.data_dir, ignore_errors=True)
    shutil.rmtree(catalog, ignore_errors=True)
    assert rc == 0 and "Sanitizer" not in log, log[-3000:]


def test_add_everywhere_late_worker_and_delete(cluster):
    redis, api, ws = cluster(workers=2)
    live(api, 2)
    r = api.post("/runtimes", ECHO, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    rid = body["id"]
    # both workers answered, each installed it, with the same hash: the registry's
    assert sorted(a["worker"] for a in body["workers"]) == names(ws)
    assert [a["status"] for a in body["workers"]] == ["installed", "installed"]
    assert body["hash"].startswith("sha256:")
    assert {a["hash"] for a in body["workers"]} == {body["hash"]}
    # the registry lists it, with an id Redis gave (not the fixture's explicit one)
    assert {"id": rid, "name": "Echo bash"} in api.get("/runtimes").json()
    assert rid != RUNTIME_ID
    one = api.get(f"/runtimes/{rid}").json()
    assert one["run_script"] == "bash main.sh" and one["hash"] == body["hash"]
    assert sorted(x["worker"] for x in one["workers"]) == names(ws)
    assert {x["hash"] for x in one["workers"]} == {body["hash"]}
    # a job with it runs
    j = api.post("/execute", {"runtime_id": rid, "source_code": "echo ran"})
    assert j.status_code == 200 and j.json()["run"]["stdout"] == "ran\n", j.text

    # a worker started now installs it before it takes a job; with the others stopped, the
    # next job can only be its own, and it succeeds
    late, catalog = extra_worker(redis)
    try:
        late.start()
        log = late.log_text()
        assert f"runtime {rid} \"Echo bash\" installed from the registry" in log
        assert log.index("installed from the registry") < log.index("taking jobs")
        for w in ws:
            assert w.stop() == 0
        live(api, 1)
        j = api.post("/execute", {"runtime_id": rid, "source_code": "echo late"})
        assert j.status_code == 200 and j.json()["run"]["stdout"] == "late\n", j.text
        assert "job" in late.log_text() and "done 200" in late.log_text()
        for w in ws:
            w.start()
        live(api, 3)

        # delete: every live worker removes it, and a job for it gets a lone server's answer
        d = api.delete(f"/runtimes/{rid}", timeout=120)
        assert d.status_code == 200, d.text
        assert sorted(a["worker"] for a in d.json()["workers"]) == names(ws + [late])
        assert {a["status"] for a in d.json()["workers"]} == {"deleted"}
        for w in ws + [late]:
            assert f"runtime {rid} removed" in w.log_text()
        assert api.get(f"/runtimes/{rid}").status_code == 404
        assert rid not in [x["id"] for x in api.get("/runtimes").json()]
        for n in names(ws + [late]):
            assert redis.cli("HGET", f"envicutor:worker-runtimes:{n}", str(rid)) == ""
        gone = api.post("/execute", {"runtime_id": rid, "source_code": "echo x"})
        lone_dir = tempfile.mkdtemp(prefix="envicutor-lone-", dir="/tmp")
        lone = Server(data_dir=lone_dir, ENVICUTOR_CATALOG=catalog).start()
        try:
            expected = lone.post("/execute", {"runtime_id": rid, "source_code": "echo x"})
        finally:
            assert lone.stop() == 0
            shutil.rmtree(lone_dir, ignore_errors=True)
        assert (gone.status_code, gone.json()) == (expected.status_code, expected.json())
        assert gone.status_code == 400
        # the runtime every test uses is still there and runs
        assert run(api, 0).status_code == 200
    finally:
        remove_worker(late, catalog)


def test_failing_install_reported_job_passed_on_and_silent_worker(cluster):
    """Worker B's system allows less compile memory than the runtime asks: its install fails,
    the answer says so, and a job of that runtime read by B is passed on to A. A worker that
    stops (SIGSTOP) is reported as not answering."""
    redis, api, ws = cluster(workers=1, JOB_RECLAIM_SECONDS=2)
    a = ws[0]
    b, catalog = extra_worker(redis, JOB_RECLAIM_SECONDS=2, COMPILE_MEMORY=65536)
    try:
        b.start()
        live(api, 2)
        big = dict(ECHO, name="Needs memory", compile_limits={"memory": 131072})
        r = api.post("/runtimes", big, timeout=120)
        assert r.status_code == 200, r.text
        by = {x["worker"]: x for x in r.json()["workers"]}
        (na,), (nb,) = names([a]), names([b])
        assert by[na]["status"] == "installed" and by[na]["hash"] == r.json()["hash"]
        assert by[nb]["status"] == "failed" and "memory" in by[nb]["message"]
        rid = r.json()["id"]
        hashes = {x["worker"]: x["hash"] for x in api.get(f"/runtimes/{rid}").json()["workers"]}
        assert hashes == {na: r.json()["hash"], nb: None}

        # A's one slot held by a job that waits for its client to go away; B is then the only
        # worker free to read the next job, which it cannot run
        body = json.dumps({"runtime_id": RUNTIME_ID, "source_code": TIMED,
                           "input": "600"}).encode()
        s = socket.create_connection(("127.0.0.1", api.port))
        s.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_log(a, "attempt 1 started")
        box = {}
        t = threading.Thread(target=lambda: box.update(r=api.post(
            "/execute", {"runtime_id": rid, "source_code": "echo where"}, timeout=120)))
        t.start()
        wait_log(b, f"passed on: runtime {rid} here is not the registry's")
        s.close()  # A's slot is free again: it takes the job B passed on
        t.join(120)
        assert box["r"].status_code == 200, box["r"].text
        assert box["r"].json()["run"]["stdout"] == "where\n"
        req = box["r"].headers["X-Request-Id"]
        assert f"req {req} job" in b.log_text()  # B read it ...
        assert f"req {req} job" in a.log_text() and "done 200" in a.log_text()  # ... A ran it
        assert "done 200" not in b.log_text()

        # a worker that stops answering: its heartbeat ends, and the answer says so
        b.proc.send_signal(signal.SIGSTOP)
        try:
            r = api.post("/runtimes", dict(ECHO, name="Third"), timeout=120)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        assert r.status_code == 200, r.text
        by = {x["worker"]: x for x in r.json()["workers"]}
        assert by[na]["status"] == "installed"
        assert by[nb]["status"] == "no answer" and "heartbeat" in by[nb]["message"]
    finally:
        remove_worker(b, catalog)


def test_install_failing_everywhere_is_not_kept(cluster):
    """A set-up that fails on every worker: 400 with each worker's output, as on one node, and
    the registry does not keep it."""
    redis, api, ws = cluster(workers=2)
    live(api, 2)
    r = api.post("/runtimes", dict(ECHO, name="Broken", compile_limits={"memory": 1 << 31}),
                 timeout=120)
    # checked against the API node's own maxima first: a plain 400
    assert r.status_code == 400
    bad = dict(ECHO, name="No such tool", provider="nix", nix_shell="{}")
    r = api.post("/runtimes", bad, timeout=300)
    assert r.status_code == 400, r.text
    assert len(r.json()["workers"]) == 2
    assert {x["status"] for x in r.json()["workers"]} == {"failed"}
    assert "No such tool" not in [x["name"] for x in api.get("/runtimes").json()]
