"""The cluster (SPEC §10, docs/cluster.md): a real redis-server on a loopback port, one API node
(`envicutor serve` with REDIS_URL) and workers (`envicutor worker`), each with a data directory
of its own, on this machine."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import BIN, Server, free_port, wait_no_residue, zip_b64

RUNTIME_ID = 4242
# prints when it starts and ends (the host's clock: boxes share it), sleeping what stdin says
TIMED = 'echo "start $(date +%s.%N)"; sleep "$(cat)"; echo "end $(date +%s.%N)"'


class Redis:
    def __init__(self, aof=False):
        # aof: every write fsynced to the append-only file before Redis answers it
        self.persistence = (["--appendonly", "yes", "--appendfsync", "always"] if aof else
                            ["--appendonly", "no"])
        self.dir = tempfile.mkdtemp(prefix="envicutor-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", *self.persistence, "--daemonize", "no", "--logfile",
             os.path.join(self.dir, "redis.log")])
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING") == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                           text=True)
        return r.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


RUNTIME = {"id": RUNTIME_ID, "name": "Timed bash", "provider": "host",
           "run_script": "bash main.sh", "compile_script": "", "source_file_name": "main.sh"}


def add_runtime(api):
    """The runtime the tests use, put in the cluster's registry through the API node: every
    worker installs it (those started later at their start)."""
    r = api.post("/runtimes", RUNTIME, timeout=120)
    assert r.status_code == 200, r.text
    return r


class Worker:
    def __init__(self, redis, catalog, slots=1, **env):
        self.data_dir = tempfile.mkdtemp(prefix="envicutor-worker-", dir="/tmp")
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "REDIS_URL": redis.url,
                    "ENVICUTOR_DATA_DIR": self.data_dir, "ENVICUTOR_CATALOG": catalog,
                    "MAX_CONCURRENT_SUBMISSIONS": str(slots)}
        self.env.update({k: str(v) for k, v in env.items()})
        self.log_path = os.path.join(self.data_dir + ".log")
        self.proc = None

    def start(self):
        """Starts the worker (again, after stop or a kill) and waits until it takes jobs."""
        seen = len(self.log_text()) if os.path.exists(self.log_path) else 0
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "worker"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while "taking jobs" not in self.log_text()[seen:]:
            assert self.proc.poll() is None, self.log_text()
            assert time.time() < deadline, self.log_text()
            time.sleep(0.05)
        return self

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None


@pytest.fixture
def cluster(request):
    """A factory: cluster(workers=2, slots=1, **env) -> (redis, api, [workers]); all stopped and
    removed at the end, each worker's host checked for residue."""
    made, mounts = [], []
    catalog = tempfile.mkdtemp(prefix="envicutor-empty-catalog-")

    def make(workers=2, slots=1, api_env=None, shared_files=False, aof=False, with_runtime=True,
             **env):
        redis = Redis(aof).start()
        made.append(redis)
        api_dir = tempfile.mkdtemp(prefix="envicutor-api-node-", dir="/tmp")
        api = Server(data_dir=api_dir, REDIS_URL=redis.url, ENVICUTOR_CATALOG=catalog,
                     **(api_env or {}), **env)
        made.append(api)
        api.start()
        if with_runtime:
            add_runtime(api)
        ws = []
        for _ in range(workers):
            w = Worker(redis, catalog, slots, **env)
            made.append(w)
            if shared_files:
                # the file store of docs/cluster.md: one directory that every node mounts
                target = os.path.join(w.data_dir, "files")
                os.makedirs(target, exist_ok=True)
                subprocess.run(["mount", "--bind", os.path.join(api_dir, "files"), target],
                               check=True)
                mounts.append(target)
            ws.append(w.start())
        return redis, api, ws

    yield make
    failed = []
    for m in reversed(made):
        if isinstance(m, Redis):
            m.cleanup()
            continue
        rc = m.stop()
        # 0, or the kill -9 a test gave it; a sanitizer's report (ENVICUTOR_BIN of the ASan
        # build) makes it exit 1
        if rc not in (0, -signal.SIGKILL) or "Sanitizer" in m.log_text():
            failed.append(m.log_text()[-3000:])
    for target in mounts:
        subprocess.run(["umount", target], check=True)
    for m in made:
        if isinstance(m, Worker):
            os.unlink(m.log_path)
        if not isinstance(m, Redis):
            shutil.rmtree(m.data_dir, ignore_errors=True)
    shutil.rmtree(catalog, ignore_errors=True)
    assert not failed, failed
    assert wait_no_residue() == ([], [], [])


def run(api, seconds, timeout=120, **kw):
    return api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": TIMED,
                                 "input": str(seconds)}, timeout=timeout, **kw)


def interval(r):
    out = r.json()["run"]["stdout"].split()
    return float(out[1]), float(out[3])


def test_results_through_workers(cluster):
    redis, api, ws = cluster(workers=2)
    r = api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": "echo hi; echo err >&2"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["run"]["stdout"] == "hi\n" and j["run"]["stderr"] == "err\n"
    assert j["run"]["exit_code"] == 0
    rid = r.headers["X-Request-Id"]
    # the request id is in the API node's log and in the log of the worker that ran it
    assert rid in api.log_text()
    assert sum(f"req {rid} job" in w.log_text() for w in ws) == 1
    # and the job id, the same on both nodes
    job = api.log_text().split(f"req {rid}: job ")[1].split()[0]
    assert sum(f"req {rid} job {job} attempt 1 started" in w.log_text() for w in ws) == 1
    # checked on the API node as on one node: a 400 without reaching a worker
    bad = api.post("/execute", {"runtime_id": 999999, "source_code": "x"})
    assert bad.status_code == 400 and "does not exist" in bad.json()["message"]
    bad = api.post("/execute", {"runtime_id": RUNTIME_ID})
    assert bad.status_code == 400
    # the API node runs no code: nothing but its helper below it
    assert "no code runs here" in api.log_text()


def test_large_body_through_redis(cluster):
    """A body over the spill size (1 MiB) goes from the API node's file into one XADD."""
    redis, api, ws = cluster(workers=1)
    data = "x" * ((20 << 20) - 1) + "\n"
    r = api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": "wc -c",
                              "input": data}, timeout=180)
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"].strip() == str(len(data))


def test_per_worker_concurrency(cluster):
    """4 jobs of 1.5 s on 2 single-slot workers: never more than 2 at once, and 2 at once."""
    redis, api, ws = cluster(workers=2, slots=1)
    out = [None] * 4

    def go(i):
        out[i] = run(api, 1.5)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r.status_code == 200 for r in out), [r.text for r in out]
    iv = [interval(r) for r in out]
    events = sorted([(s, 1) for s, _ in iv] + [(e, -1) for _, e in iv])
    depth, most = 0, 0
    for _, d in events:
        depth += d
        most = max(most, depth)
    assert most == 2, iv
    # each worker ran two, one after the other
    for w in ws:
        assert w.log_text().count(" done 200 ") == 2, w.log_text()
    span = max(e for _, e in iv) - min(s for s, _ in iv)
    assert span < 4 * 1.5, iv  # the two pairs overlapped: less than 4 runs end to end


def test_worker_killed_mid_job(cluster):
    """Prints its timeline (pytest -s): the job's start on one worker, that worker's kill -9,
    the job's start on the other, the answer."""
    redis, api, ws = cluster(workers=2, slots=1, JOB_RECLAIM_SECONDS=2)
    box = {}
    t0 = time.monotonic()
    timeline = []

    def go():
        box["r"] = run(api, 4)
        timeline.append((time.monotonic() - t0, f"answer {box['r'].status_code}"))

    t = threading.Thread(target=go)
    t.start()
    deadline = time.time() + 30
    runner = None
    while runner is None:
        assert time.time() < deadline
        for w in ws:
            if "attempt 1 started" in w.log_text():
                runner = w
        time.sleep(0.05)
    timeline.append((time.monotonic() - t0, "job started on worker A (attempt 1)"))
    other = ws[1] if runner is ws[0] else ws[0]
    runner.proc.kill()
    runner.proc.wait(10)
    timeline.append((time.monotonic() - t0, "worker A killed (kill -9)"))
    while "attempt 2 started" not in other.log_text() and t.is_alive():
        time.sleep(0.02)
    timeline.append((time.monotonic() - t0, "job started on worker B (attempt 2)"))
    t.join(120)
    r = box["r"]
    assert r.status_code == 200, r.text
    assert r.json()["run"]["exit_code"] == 0
    assert "claimed job entry" in other.log_text()
    assert "attempt 2 started" in other.log_text()
    for at, what in sorted(timeline):
        print(f"{at:6.2f} s  {what}")
    # the dead worker's heartbeat expired: /health lists the other alone
    deadline = time.time() + 10
    while len(api.get("/health").json()["workers"]) != 1:
        assert time.time() < deadline, api.get("/health").text
        time.sleep(0.1)
    # the killed worker's helper took its box down with it
    assert wait_no_residue(10) == ([], [], [])


def test_max_attempts_gives_xx(cluster):
    """A job whose every runner dies is answered XX after JOB_MAX_ATTEMPTS deliveries."""
    redis, api, ws = cluster(workers=1, slots=1, JOB_RECLAIM_SECONDS=1, JOB_MAX_ATTEMPTS=1)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run(api, 30)))
    t.start()
    w = ws[0]
    deadline = time.time() + 30
    while "attempt 1 started" not in w.log_text():
        assert time.time() < deadline
        time.sleep(0.05)
    w.proc.kill()
    w.proc.wait(10)
    w.log.close()
    w.start()  # the same worker again: the job's second delivery is one too many
    t.join(60)
    r = box["r"]
    assert r.status_code == 200, r.text
    assert r.json()["run"]["exit_status"] == "XX"
    assert "JOB_MAX_ATTEMPTS" in r.json()["run"]["exit_message"]


def test_health_lists_workers(cluster):
    redis, api, ws = cluster(workers=2, slots=2)
    deadline = time.time() + 10
    while True:
        h = api.get("/health").json()
        if len(h["workers"]) == 2 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert sorted(x["slots"] for x in h["workers"]) == [2, 2]
    assert h["free_slots"] == 4
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run(api, 3)))
    t.start()
    deadline = time.time() + 20
    while api.get("/health").json()["free_slots"] != 3:
        assert time.time() < deadline
        time.sleep(0.05)
    t.join()
    assert box["r"].status_code == 200


def cluster_gauges(api):
    """{name{labels}: value} of the envicutor_cluster_ samples of /metrics."""
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    return {line.split()[0]: int(float(line.split()[1])) for line in r.text.splitlines()
            if line.startswith("envicutor_cluster_")}


def wait_gauges(api, want, timeout=20):
    deadline = time.time() + timeout
    while True:
        g = cluster_gauges(api)
        if all(g.get(k) == v for k, v in want.items()):
            return g
        assert time.time() < deadline, (g, want)
        time.sleep(0.05)


def test_metrics_show_the_cluster(cluster):
    """/metrics of an API node: Redis reached, the live workers and their slots, the jobs of
    the stream waiting and taken, as they change; only redis_up = 0 while Redis is down."""
    redis, api, ws = cluster(workers=2, slots=1)
    wait_gauges(api, {"envicutor_cluster_redis_up": 1, "envicutor_cluster_workers": 2,
                      'envicutor_cluster_slots{state="all"}': 2,
                      'envicutor_cluster_slots{state="free"}': 2,
                      'envicutor_cluster_jobs{state="waiting"}': 0,
                      'envicutor_cluster_jobs{state="taken"}': 0})
    out = []
    threads = [threading.Thread(target=lambda: out.append(run(api, 4))) for _ in range(3)]
    for t in threads:
        t.start()
    # two run, one per worker; the third waits in the stream
    wait_gauges(api, {'envicutor_cluster_jobs{state="taken"}': 2,
                      'envicutor_cluster_jobs{state="waiting"}': 1,
                      'envicutor_cluster_slots{state="free"}': 0})
    for t in threads:
        t.join()
    assert [r.status_code for r in out] == [200, 200, 200]
    wait_gauges(api, {'envicutor_cluster_jobs{state="taken"}': 0,
                      'envicutor_cluster_jobs{state="waiting"}': 0})
    redis.stop()
    assert cluster_gauges(api) == {"envicutor_cluster_redis_up": 0}
    redis.start()


def test_queue_full(cluster):
    redis, api, ws = cluster(workers=1, slots=1, api_env={"MAX_QUEUE_SIZE": 1})
    threads, out = [], []
    # one runs, one waits: the queue is full
    for _ in range(2):
        th = threading.Thread(target=lambda: out.append(run(api, 3)))
        th.start()
        threads.append(th)
        deadline = time.time() + 20
        want = len(threads)
        while int(redis.cli("XLEN", "envicutor:jobs") or 0) < want:
            assert time.time() < deadline
            time.sleep(0.02)
    r = run(api, 0)
    assert r.status_code == 503 and "queue" in r.json()["message"]
    for th in threads:
        th.join()
    assert [x.status_code for x in out] == [200, 200]


def test_redis_down_then_back(cluster):
    redis, api, ws = cluster(workers=1)
    assert run(api, 0).status_code == 200
    redis.stop()
    r = run(api, 0)
    assert r.status_code == 503
    assert "Redis" in r.json()["message"] and "unreachable" in r.json()["message"]
    h = api.get("/health")
    assert h.status_code == 503 and "Redis" in h.json()["message"]
    redis.start()
    deadline = time.time() + 30
    # started without its data (no persistence here): the registry is gone with the jobs;
    # the runtime added again, the worker finds it already installed from the same definition
    while api.post("/runtimes", RUNTIME, timeout=60).status_code == 503:
        assert time.time() < deadline
        time.sleep(0.2)
    while True:
        r = run(api, 0)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and time.time() < deadline, r.text
        time.sleep(0.2)


def test_cancel_on_disconnect(cluster):
    """A client that goes away cancels its job on the worker: the single slot is free again at
    once, so the next job runs long before the first one's sleep would have ended."""
    redis, api, ws = cluster(workers=1, slots=1)
    body = json.dumps({"runtime_id": RUNTIME_ID, "source_code": TIMED, "input": "50"}).encode()
    s = socket.create_connection(("127.0.0.1", api.port))
    s.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    w = ws[0]
    deadline = time.time() + 30
    while "attempt 1 started" not in w.log_text():
        assert time.time() < deadline
        time.sleep(0.05)
    s.close()
    deadline = time.time() + 20
    while "cancelled, its client went away" not in w.log_text():
        assert time.time() < deadline, w.log_text()
        time.sleep(0.05)
    r = run(api, 0, timeout=30)
    assert r.status_code == 200
    assert "job" in api.log_text() and "cancelled" in api.log_text()
    assert wait_no_residue(10) == ([], [], [])


def test_worker_needs_redis_url():
    r = subprocess.run([BIN, "worker"], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "REDIS_URL is required" in r.stderr
    r = subprocess.run([BIN, "worker"], env={"PATH": "/usr/bin:/bin",
                                             "REDIS_URL": "http://x"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "REDIS_URL: expected redis://host:port[/db]" in r.stderr


def test_judge_mode_through_workers(cluster):
    redis, api, ws = cluster(workers=1)
    r = api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": "read a b; echo $((a+b))",
                              "tests": [{"input": "1 2", "expected_output": "3"},
                                        {"input": "2 2", "expected_output": "5"}]})
    assert r.status_code == 200, r.text
    assert [t["verdict"] for t in r.json()["tests"]] == ["AC", "WA"]
    assert r.json()["verdict"] == "WA"


def test_file_store_on_a_shared_directory(cluster):
    """POST /files on the API node; the worker reads the file from the same directory."""
    redis, api, ws = cluster(workers=1, shared_files=True)
    data = b"40 2\n"
    up = requests.post(api.url + "/files", data=data, timeout=30)
    assert up.status_code in (200, 201), up.text
    fid = up.json()["id"]
    r = api.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": "read a b; echo $((a+b))",
                              "input_file": fid})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"] == "42\n"


def test_job_lost_with_redis_data_is_answered(cluster):
    """Redis restarted without persistence (this test's --save '' --appendonly no) loses the
    jobs it held: a request that waited for one is answered 503 saying so, not left hanging."""
    redis, api, ws = cluster(workers=0)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run(api, 0, timeout=60)))
    t.start()
    deadline = time.time() + 20
    while redis.cli("XLEN", "envicutor:jobs") != "1":
        assert time.time() < deadline
        time.sleep(0.02)
    redis.stop()
    redis.start()
    t.join(60)
    r = box["r"]
    assert r.status_code == 503 and "lost" in r.json()["message"], r.text


def redis_clients(redis):
    return len([l for l in redis.cli("CLIENT", "LIST").splitlines() if "cmd=client" not in l])


def test_waiting_requests_share_connections(cluster):
    """1000 requests waiting on an API node hold no Redis connection each: the node's stay at
    its fixed few (3 for commands, 1 for results)."""
    redis, api, ws = cluster(workers=0)
    before = redis_clients(redis)
    body = json.dumps({"runtime_id": RUNTIME_ID, "source_code": "true"}).encode()
    req = (b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", api.port))
            s.sendall(req)
            socks.append(s)
        deadline = time.time() + 60
        while redis.cli("XLEN", "envicutor:jobs") != "1000":
            assert time.time() < deadline, redis.cli("XLEN", "envicutor:jobs")
            time.sleep(0.05)
        during = redis_clients(redis)
        assert during <= 4 and during - before <= 3, (before, during)
    finally:
        for s in socks:
            s.close()
    # every waiting job was taken off the stream as its client went away
    deadline = time.time() + 60
    while redis.cli("XLEN", "envicutor:jobs") != "0":
        assert time.time() < deadline, redis.cli("XLEN", "envicutor:jobs")
        time.sleep(0.1)


def test_query_flags_reach_the_worker(cluster):
    """?is_project=true and ?base64_output=true travel with the job: the worker unpacks the
    archive, and answers the output's exact bytes in base64."""
    redis, api, ws = cluster(workers=1)
    project = zip_b64({"main.sh": "cat data.txt; printf '\\001'", "data.txt": "hello"})
    r = api.post("/execute?is_project=true&base64_output=true",
                 {"runtime_id": RUNTIME_ID, "source_code": project})
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["run"]["stdout"]) == b"hello\x01"


def test_malformed_entry_is_dropped(cluster):
    """An entry that no API node made (no job, no reply stream) is acknowledged and dropped;
    the worker goes on."""
    redis, api, ws = cluster(workers=1)
    assert redis.cli("XADD", "envicutor:jobs", "*", "body", "{}")
    deadline = time.time() + 20
    while "no job or reply field; dropped" not in ws[0].log_text():
        assert time.time() < deadline, ws[0].log_text()
        time.sleep(0.05)
    assert run(api, 0).status_code == 200
    assert redis.cli("XLEN", "envicutor:jobs") == "0"


def test_worker_stopped_leaves_its_job_to_another(cluster):
    """SIGTERM with SHUTDOWN_TIMEOUT=0: the worker kills its run and leaves the job
    unacknowledged; another worker takes it once JOB_RECLAIM_SECONDS pass."""
    redis, api, ws = cluster(workers=2, slots=1, JOB_RECLAIM_SECONDS=1, SHUTDOWN_TIMEOUT=0)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run(api, 3)))
    t.start()
    deadline = time.time() + 30
    runner = None
    while runner is None:
        assert time.time() < deadline
        runner = next((w for w in ws if "attempt 1 started" in w.log_text()), None)
        time.sleep(0.05)
    other = ws[1] if runner is ws[0] else ws[0]
    assert runner.stop() == 0, runner.log_text()
    assert "left to another worker" in runner.log_text()
    t.join(60)
    r = box["r"]
    assert r.status_code == 200, r.text
    assert "end" in r.json()["run"]["stdout"]
    assert "attempt 2 started" in other.log_text()


def test_accepted_job_survives_a_redis_crash_with_aof(cluster):
    """With appendonly yes and appendfsync always, Redis killed (-9) while a job runs and
    restarted from its files: the worker writes the result once Redis is back, and the client
    gets it."""
    redis, api, ws = cluster(workers=1, aof=True)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run(api, 1)))
    t.start()
    w = ws[0]
    deadline = time.time() + 30
    while "attempt 1 started" not in w.log_text():
        assert time.time() < deadline
        time.sleep(0.02)
    redis.stop()
    while "write the result" not in w.log_text():
        assert time.time() < deadline, w.log_text()
        time.sleep(0.05)
    redis.start()
    t.join(60)
    r = box["r"]
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"].startswith("start ")
    assert "lost" not in api.log_text()


# ---- asynchronous submissions and /execute/ws on an API node -------------------------------

def hold_the_slot(api, worker):
    """A synchronous /execute of a long sleep on a raw socket, taken by the worker: its one slot
    is held until the socket is closed, which cancels the job (test_cancel_on_disconnect)."""
    seen = worker.log_text().count("attempt 1 started")
    body = json.dumps({"runtime_id": RUNTIME_ID, "source_code": TIMED, "input": "60"}).encode()
    s = socket.create_connection(("127.0.0.1", api.port))
    s.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.time() + 30
    while worker.log_text().count("attempt 1 started") == seen:
        assert time.time() < deadline, worker.log_text()
        time.sleep(0.05)
    return s


def wait_submission(api, token, bound=60):
    deadline = time.time() + bound
    while time.time() < deadline:
        r = api.get("/submissions/" + token)
        assert r.status_code == 200, r.text
        if r.json()["status"] == "done":
            return r.json()
        assert r.json()["status"] in ("queued", "running"), r.json()
        time.sleep(0.05)
    raise AssertionError(f"{token} not done within {bound} s")


def test_async_submission_through_a_worker_with_callback(cluster):
    """Queued while the only worker slot is held (by construction: nothing else can take it),
    then run by the worker, recorded on the API node, and POSTed to the callback by it."""
    from test_submissions import Receiver
    redis, api, ws = cluster(workers=1, slots=1, api_env={"CALLBACK_ALLOW_PRIVATE": "1"})
    w = ws[0]
    rec = Receiver()
    try:
        hold = hold_the_slot(api, w)
        r = api.post("/submissions", {"runtime_id": RUNTIME_ID, "callback_url": rec.url,
                                      "source_code": "read x; echo \"got $x\"; echo e >&2",
                                      "input": "abc\n"})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        rid = r.headers["X-Request-Id"]
        assert api.get("/submissions/" + token).json() == {"status": "queued"}
        assert not rec.arrived.is_set()
        hold.close()
        doc = wait_submission(api, token)
        assert doc["token"] == token and doc["result_status"] == 200, doc
        assert doc["result"]["run"]["stdout"] == "got abc\n"
        assert doc["result"]["run"]["stderr"] == "e\n"
        assert doc["result"]["run"]["exit_code"] == 0
        # run by the worker (its log carries the request id), not by the API node
        assert f"req {rid} job" in w.log_text(), w.log_text()
        assert rec.arrived.wait(30)
        assert json.loads(rec.bodies[0]) == doc
        assert rec.headers[0]["X-Envicutor-Token"] == token
    finally:
        rec.close()


def test_async_submission_checked_on_the_api_node(cluster):
    """A 400 at once, as on one node and as /execute on an API node: no token, no job."""
    redis, api, ws = cluster(workers=1)
    r = api.post("/submissions", {"runtime_id": 999999, "source_code": "x"})
    assert r.status_code == 400 and "does not exist" in r.json()["message"], r.text
    r = api.post("/submissions?is_project=true",
                 {"runtime_id": RUNTIME_ID, "source_code": "echo x"})
    assert r.status_code == 400, r.text
    r = api.post("/submissions", {"runtime_id": RUNTIME_ID, "source_code": "echo x",
                                  "callback_url": "http://127.0.0.1:9/"})
    assert r.status_code == 400 and "CALLBACK_ALLOW_PRIVATE" in r.json()["message"], r.text
    # a project body with its flag reaches the worker as /execute's does
    r = api.post("/submissions?is_project=true",
                 {"runtime_id": RUNTIME_ID, "source_code": zip_b64({"main.sh": "echo zipped"})})
    assert r.status_code == 201, r.text
    doc = wait_submission(api, r.json()["token"])
    assert doc["result_status"] == 200 and doc["result"]["run"]["stdout"] == "zipped\n", doc
    assert redis.cli("XLEN", "envicutor:jobs") == "0"


def test_async_submission_withdrawn_when_the_api_node_stops(cluster):
    """SIGTERM with a submission still waiting for a worker: after SHUTDOWN_TIMEOUT it is taken
    off the stream (no worker ever runs it) and recorded done with the 503 of a stopping server,
    which the API node answers after its restart. The worker is stopped meanwhile, so that
    nothing can take the submission before the API node stops."""
    redis, api, ws = cluster(workers=1, slots=1, SHUTDOWN_TIMEOUT=1)
    w = ws[0]
    hold = hold_the_slot(api, w)
    r = api.post("/submissions", {"runtime_id": RUNTIME_ID, "source_code": "echo never"})
    assert r.status_code == 201, r.text
    token, rid = r.json()["token"], r.headers["X-Request-Id"]
    assert api.get("/submissions/" + token).json() == {"status": "queued"}
    assert w.stop() == 0, w.log_text()
    hold.close()  # its job withdrawn by the API node: only the submission's is left
    deadline = time.time() + 20
    while "cancelled, its client went away" not in api.log_text():
        assert time.time() < deadline, api.log_text()
        time.sleep(0.05)
    assert redis.cli("XLEN", "envicutor:jobs") == "1"
    assert api.stop() == 0, api.log_text()
    assert "withdrawing them" in api.log_text()
    assert redis.cli("XLEN", "envicutor:jobs") == "0"
    again = Server(data_dir=api.data_dir, REDIS_URL=redis.url,
                   ENVICUTOR_CATALOG=api.env["ENVICUTOR_CATALOG"])
    again.start()
    try:
        doc = again.get("/submissions/" + token).json()
        assert doc["status"] == "done" and doc["result_status"] == 503, doc
        assert "shutting down" in doc["result"]["message"]
        w.start()
        r = again.post("/execute", {"runtime_id": RUNTIME_ID, "source_code": "echo after"})
        assert r.status_code == 200 and r.json()["run"]["stdout"] == "after\n", r.text
    finally:
        assert again.stop() == 0, again.log_text()
    assert f"req {rid} job" not in w.log_text()


def test_websocket_refused_on_an_api_node(cluster):
    """An API node runs no code: the upgrade succeeds so that the reason reaches a browser, then
    one `error` message and a close 1011, before any init is read."""
    import websocket
    redis, api, ws = cluster(workers=1)
    sock = websocket.create_connection(api.url.replace("http://", "ws://") + "/execute/ws",
                                       timeout=30)
    try:
        op, data = sock.recv_data()
        assert op == websocket.ABNF.OPCODE_TEXT
        msg = json.loads(data)
        assert msg["type"] == "error", msg
        assert "not available on an API node of a cluster" in msg["message"]
        assert "POST /submissions" in msg["message"]
        op, data = sock.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1011
    finally:
        sock.close()
    # nothing reached a worker
    assert "attempt 1 started" not in ws[0].log_text()
