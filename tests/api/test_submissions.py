"""Asynchronous submissions (SPEC §10, docs/async.md) through a real server: a token at once,
queued / running / done, the result kept RESULT_TTL seconds and within RESULT_STORE_SIZE,
callbacks to a local HTTP server (retried, never holding a submission's slot), the same checks
and the same queue as /execute, and what a restart does to what had not finished."""
import http.server
import json
import re
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import Server, wait_no_residue

TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
KEY = "async-test-key-0123456789"
ADMIN_KEY = "async-admin-key-0123456789"


@pytest.fixture(scope="module")
def one():
    """One slot, one waiting place, callbacks allowed to loopback."""
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, MAX_QUEUE_SIZE=1, CALLBACK_ALLOW_PRIVATE=1).start()
    yield s
    assert s.stop() == 0, s.log_text()
    assert wait_no_residue() == ([], [], [])


def submit(s, body, query="", **kw):
    return requests.post(s.url + "/submissions" + query, json=body, timeout=60, **kw)


def status(s, token, **kw):
    return requests.get(s.url + "/submissions/" + token, timeout=60, **kw)


def wait_done(s, token, bound=60, **kw):
    deadline = time.time() + bound
    while time.time() < deadline:
        r = status(s, token, **kw)
        assert r.status_code == 200, r.text
        if r.json()["status"] == "done":
            return r.json()
        assert r.json() == {"status": r.json()["status"]}
        assert r.json()["status"] in ("queued", "running")
        time.sleep(0.05)
    raise AssertionError(f"{token} not done within {bound} s")


def running(s):
    text = requests.get(s.url + "/metrics", timeout=10).text
    return int(re.search(r"^envicutor_submissions_running (\d+)$", text, re.M).group(1))


def metric(s, name, labels="", **kw):
    text = requests.get(s.url + "/metrics", timeout=10, **kw).text
    m = re.search("^" + re.escape(name + ("{" + labels + "}" if labels else "")) + r" (\d+)$",
                  text, re.M)
    return int(m.group(1))


class Hold:
    """A synchronous /execute of a long sleep on a raw socket: it holds the one slot until
    release() closes the connection, which cancels the run (SPEC §5)."""

    def __init__(self, s):
        self.s = s
        body = json.dumps({"runtime_id": s.runtimes()["Bash"], "source_code": "sleep 60"})
        self.sock = socket.create_connection(("127.0.0.1", s.port))
        self.sock.sendall((f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                           f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        deadline = time.time() + 30
        while running(s) != 1:
            assert time.time() < deadline, "the holding run never started"
            time.sleep(0.05)

    def release(self):
        self.sock.close()


class Receiver:
    """A local HTTP server that records each POST; answers `code`, after `delay` seconds."""

    def __init__(self, code=200, delay=0.0):
        self.bodies, self.headers = [], []
        self.arrived = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers["Content-Length"])
                outer.bodies.append(self.rfile.read(n))
                outer.headers.append(dict(self.headers))
                outer.arrived.set()
                time.sleep(delay)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?x=1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_create_poll_done(one):
    py = one.runtimes()["Python 3"]
    r = submit(one, {"runtime_id": py, "source_code": "print(input()[::-1])",
                     "input": "stressed"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert r.json() == {"token": token} and TOKEN.match(token)
    doc = wait_done(one, token)
    assert doc["status"] == "done" and doc["token"] == token and doc["result_status"] == 200
    res = doc["result"]
    assert set(res) == {"extract", "compile", "run"}
    assert res["run"]["stdout"] == "desserts\n" and res["run"]["exit_code"] == 0
    # the same answer /execute gives, field for field (the measures aside)
    sync = one.execute(py, "print(input()[::-1])", input="stressed").json()
    assert set(sync["run"]) == set(res["run"]) and sync["run"]["stdout"] == res["run"]["stdout"]
    # stays there, the same, while it is kept
    assert status(one, token).json() == doc


def test_tokens_differ(one):
    bash = one.runtimes()["Bash"]
    tokens = []
    for _ in range(3):  # one after another: this server has a single waiting place
        tokens.append(submit(one, {"runtime_id": bash, "source_code": "true"}).json()["token"])
        wait_done(one, tokens[-1])
    assert len(set(tokens)) == 3


def test_unknown_token_404(one):
    for t in ["A" * 32, "nope", "A" * 31 + "!", "A" * 33, "%2e%2e%2f" + "A" * 23]:
        r = status(one, t)
        assert r.status_code == 404, (t, r.text)
        assert "token" in r.json()["message"]


def test_validation_is_that_of_execute(one):
    bash = one.runtimes()["Bash"]
    bad = [{"runtime_id": 999999, "source_code": "x"},
           {"runtime_id": bash, "source_code": "x", "run_limits": {"wall_time": 1e9}},
           {"runtime_id": bash},
           "not an object"]
    for body in bad:
        a = submit(one, body)
        b = one.post("/execute", body)
        assert a.status_code == b.status_code == 400, (body, a.text, b.text)
        assert a.json() == b.json()
    r = requests.post(one.url + "/submissions?is_project=true", timeout=30,
                      json={"runtime_id": bash, "source_code": "@@@"})
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid base64")


@pytest.mark.parametrize("url,words", [
    ("https://example.com/hook", "https is not supported"),
    ("ftp://example.com/", "http://"),
    ("http://user:pw@example.com/", "user name"),
    ("http://exa mple.com/", "printable"),
    ("http://example.com:0/", "port"),
    ("http://example.com:99999/", "port"),
    ("http:///path", "no host"),
    ("http://example.com/#frag", "fragment"),
    (42, "string"),
])
def test_bad_callback_url_400(one, url, words):
    bash = one.runtimes()["Bash"]
    r = submit(one, {"runtime_id": bash, "source_code": "true", "callback_url": url})
    assert r.status_code == 400, r.text
    assert words in r.json()["message"], r.json()


def test_judge_body(one):
    py = one.runtimes()["Python 3"]
    body = {"runtime_id": py, "source_code": "print(int(input()) * 2)",
            "tests": [{"input": "2", "expected_output": "4"},
                      {"input": "5", "expected_output": "11"}]}
    r = submit(one, body)
    assert r.status_code == 201, r.text
    res = wait_done(one, r.json()["token"])["result"]
    assert [t["verdict"] for t in res["tests"]] == ["AC", "WA"]
    assert res["verdict"] == "WA" and res["run"] is None


def test_project_body(one):
    from conftest import zip_b64
    py = one.runtimes()["Python 3"]
    src = zip_b64({"main.py": "import lib\nprint(lib.X)\n", "lib.py": "X = 41 + 1\n"})
    r = submit(one, {"runtime_id": py, "source_code": src}, "?is_project=true")
    assert r.status_code == 201, r.text
    res = wait_done(one, r.json()["token"])["result"]
    assert res["extract"]["exit_code"] == 0 and res["run"]["stdout"] == "42\n"


def test_queued_then_running_then_done(one):
    bash = one.runtimes()["Bash"]
    hold = Hold(one)
    try:
        a = submit(one, {"runtime_id": bash, "source_code": "echo first"}).json()["token"]
        # the one slot is held: the submission can only wait
        assert status(one, a).json() == {"status": "queued"}
        # the one waiting place is taken: the next is refused as /execute would be
        r = submit(one, {"runtime_id": bash, "source_code": "echo refused"})
        assert r.status_code == 503 and "queue" in r.json()["message"]
        assert status(one, a).json() == {"status": "queued"}
    finally:
        hold.release()
    assert wait_done(one, a)["result"]["run"]["stdout"] == "first\n"

    # a long run is seen running, and a submission behind it queued while it runs
    long = submit(one, {"runtime_id": bash, "source_code": "sleep 4; echo long"}).json()["token"]
    deadline = time.time() + 30
    while status(one, long).json()["status"] != "running":
        assert time.time() < deadline
        time.sleep(0.02)
    behind = submit(one, {"runtime_id": bash, "source_code": "echo behind"}).json()["token"]
    seen = status(one, behind).json()
    if status(one, long).json()["status"] == "running":
        assert seen == {"status": "queued"}
    assert wait_done(one, long)["result"]["run"]["stdout"] == "long\n"
    assert wait_done(one, behind)["result"]["run"]["stdout"] == "behind\n"


def test_callback_receives_the_result(one):
    bash = one.runtimes()["Bash"]
    rec = Receiver()
    try:
        r = submit(one, {"runtime_id": bash, "source_code": "echo called back",
                         "callback_url": rec.url})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        doc = wait_done(one, token)
        assert rec.arrived.wait(30)
        time.sleep(0.3)  # a second delivery, were there one, would be here by now
        assert len(rec.bodies) == 1
        assert json.loads(rec.bodies[0]) == doc
        assert rec.headers[0]["X-Envicutor-Token"] == token
        assert rec.headers[0]["Content-Type"] == "application/json"
        assert doc["result"]["run"]["stdout"] == "called back\n"
    finally:
        rec.close()


def test_callback_retried_until_2xx(one):
    bash = one.runtimes()["Bash"]
    failing = Receiver(code=500)
    try:
        before = metric(one, "envicutor_async_callbacks_total", 'outcome="attempt_failed"')
        token = submit(one, {"runtime_id": bash, "source_code": "echo x",
                             "callback_url": failing.url}).json()["token"]
        wait_done(one, token)
        deadline = time.time() + 30
        while len(failing.bodies) < 2:  # the first try, and a retry after about a second
            assert time.time() < deadline
            time.sleep(0.05)
        assert json.loads(failing.bodies[1]) == json.loads(failing.bodies[0])
        assert metric(one, "envicutor_async_callbacks_total",
                      'outcome="attempt_failed"') >= before + 1
    finally:
        failing.close()


def test_slow_and_dead_callbacks_hold_no_slot(one):
    bash = one.runtimes()["Bash"]
    slow = Receiver(delay=30)  # takes the POST, answers after the attempt's timeout
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/"
    dead.close()  # nothing listens there: refused
    good = Receiver()
    try:
        t1 = submit(one, {"runtime_id": bash, "source_code": "echo slow",
                          "callback_url": slow.url}).json()["token"]
        t2 = submit(one, {"runtime_id": bash, "source_code": "echo dead",
                          "callback_url": dead_url}).json()["token"]
        wait_done(one, t1)
        wait_done(one, t2)
        assert slow.arrived.wait(30)  # its delivery is under way, and held there
        # with one slot, a submission runs and its callback arrives while the slow target
        # holds its delivery and the dead one is retried
        t3 = submit(one, {"runtime_id": bash, "source_code": "echo third",
                          "callback_url": good.url}).json()["token"]
        doc = wait_done(one, t3, bound=20)
        assert doc["result"]["run"]["stdout"] == "third\n"
        assert good.arrived.wait(20)
        assert json.loads(good.bodies[0]) == doc
        assert len(slow.bodies) == 1  # still not answered: no retry has begun
    finally:
        slow.close()
        good.close()


def test_large_body_spilled_to_a_file(one):
    """A body over 1 MiB is spilled to a file by the server; the submission keeps it until its
    turn, after the connection that brought it has been answered and closed."""
    py = one.runtimes()["Python 3"]
    rec = Receiver()
    try:
        data = "x" * (3 << 20)
        r = submit(one, {"runtime_id": py, "input": data, "callback_url": rec.url,
                         "source_code": "import sys\nprint(len(sys.stdin.read()))"})
        assert r.status_code == 201, r.text
        doc = wait_done(one, r.json()["token"])
        assert doc["result"]["run"]["stdout"] == f"{len(data) + 1}\n"  # a newline is added
        assert rec.arrived.wait(30) and json.loads(rec.bodies[0]) == doc
        # and its callback_url is checked at once, like a small body's
        r = submit(one, {"runtime_id": py, "input": data, "source_code": "pass",
                         "callback_url": "https://example.com/"})
        assert r.status_code == 400 and "https" in r.json()["message"]
    finally:
        rec.close()


def test_metrics_count_submissions(one):
    bash = one.runtimes()["Bash"]
    before = metric(one, "envicutor_async_submissions_total")
    t = submit(one, {"runtime_id": bash, "source_code": "true"}).json()["token"]
    submit(one, {"runtime_id": 999999, "source_code": "true"})  # a 400 is not counted
    wait_done(one, t)
    assert metric(one, "envicutor_async_submissions_total") == before + 1
    assert metric(one, "envicutor_async_results") >= 1


@pytest.fixture(scope="module")
def tiny():
    """Results kept 2 seconds, a store of 1 byte (full after one result), API keys, and the
    default refusal of private callback addresses."""
    s = Server(RESULT_TTL=2, RESULT_STORE_SIZE=1, EXECUTE_API_KEYS=KEY,
               ADMIN_API_KEYS=ADMIN_KEY).start()
    yield s
    assert s.stop() == 0, s.log_text()
    assert wait_no_residue() == ([], [], [])


AUTH = {"Authorization": "Bearer " + KEY}


def test_api_keys_apply(tiny):
    r = requests.post(tiny.url + "/submissions", json={}, timeout=10)
    assert r.status_code == 401
    assert requests.get(tiny.url + "/submissions/" + "A" * 32, timeout=10).status_code == 401


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://localhost/", "http://10.1.2.3/",
                                 "http://[::1]:80/", "http://169.254.169.254/latest"])
def test_private_callbacks_refused_by_default(tiny, url):
    bash = requests.get(tiny.url + "/runtimes", headers=AUTH, timeout=10).json()
    bash = [x["id"] for x in bash if x["name"] == "Bash"][0]
    r = submit(tiny, {"runtime_id": bash, "source_code": "true", "callback_url": url},
               headers=AUTH)
    assert r.status_code == 400 and "CALLBACK_ALLOW_PRIVATE" in r.json()["message"], r.text


def test_store_full_then_expiry_frees_it(tiny):
    bash = requests.get(tiny.url + "/runtimes", headers=AUTH, timeout=10).json()
    bash = [x["id"] for x in bash if x["name"] == "Bash"][0]
    body = {"runtime_id": bash, "source_code": "echo kept"}
    r = submit(tiny, body, headers=AUTH)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    doc = wait_done(tiny, token, headers=AUTH)
    assert doc["result"]["run"]["stdout"] == "kept\n"
    # one result fills a store of one byte
    full = submit(tiny, body, headers=AUTH)
    assert full.status_code == 507 and "RESULT_STORE_SIZE" in full.json()["message"]
    # it was 200 above; it becomes 404 once RESULT_TTL has passed, and stays so
    deadline = time.time() + 30
    while status(tiny, token, headers=AUTH).status_code == 200:
        assert time.time() < deadline, "the result never expired"
        time.sleep(0.1)
    assert status(tiny, token, headers=AUTH).status_code == 404
    # the sweep removes it, and its bytes no longer count against the store
    deadline = time.time() + 30
    while metric(tiny, "envicutor_async_results_bytes",
                 headers={"Authorization": "Bearer " + ADMIN_KEY}) != 0:
        assert time.time() < deadline, "the expired result was never removed"
        time.sleep(0.1)
    assert submit(tiny, body, headers=AUTH).status_code == 201


def test_restart_finishes_what_was_interrupted():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, CALLBACK_ALLOW_PRIVATE=1).start()
    rec = Receiver()
    try:
        bash = s.runtimes()["Bash"]
        done = submit(s, {"runtime_id": bash, "source_code": "echo before"}).json()["token"]
        before = wait_done(s, done)
        run = submit(s, {"runtime_id": bash, "source_code": "sleep 60",
                         "callback_url": rec.url}).json()["token"]
        deadline = time.time() + 30
        while status(s, run).json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        wait = submit(s, {"runtime_id": bash, "source_code": "echo never"}).json()["token"]
        assert status(s, wait).json() == {"status": "queued"}
        s.stop(sig=signal.SIGKILL)
        assert wait_no_residue(timeout=20) == ([], [], [])
        s2 = Server(data_dir=s.data_dir, MAX_CONCURRENT_SUBMISSIONS=1,
                    CALLBACK_ALLOW_PRIVATE=1).start()
        try:
            assert status(s2, done).json() == before  # kept across the restart
            for t in (run, wait):
                doc = status(s2, t).json()
                assert doc["status"] == "done" and doc["result_status"] == 503, doc
                assert "restarted" in doc["result"]["message"]
            # the interrupted submission's callback is delivered by the new server
            assert rec.arrived.wait(30)
            assert json.loads(rec.bodies[0]) == status(s2, run).json()
        finally:
            assert s2.stop() == 0, s2.log_text()
    finally:
        rec.close()
        if s.proc.poll() is None:
            s.stop()
    assert wait_no_residue() == ([], [], [])


def test_sigterm_lets_the_running_one_finish_and_records_the_waiting_one():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, SHUTDOWN_TIMEOUT=60).start()
    try:
        bash = s.runtimes()["Bash"]
        run = submit(s, {"runtime_id": bash, "source_code": "sleep 2; echo finished"}).json()
        run = run["token"]
        deadline = time.time() + 30
        while status(s, run).json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        wait = submit(s, {"runtime_id": bash, "source_code": "echo never"}).json()["token"]
        assert status(s, wait).json() == {"status": "queued"}
        assert s.stop() == 0, s.log_text()
        s2 = Server(data_dir=s.data_dir, MAX_CONCURRENT_SUBMISSIONS=1).start()
        try:
            # the running one was given its time (SHUTDOWN_TIMEOUT) and its answer kept
            doc = status(s2, run).json()
            assert doc["result_status"] == 200 and doc["result"]["run"]["stdout"] == "finished\n"
            # the waiting one was answered as a waiting /execute is: 503, the server stopping
            doc = status(s2, wait).json()
            assert doc["status"] == "done" and doc["result_status"] == 503, doc
            assert "restart" not in doc["result"]["message"]
        finally:
            assert s2.stop() == 0, s2.log_text()
    finally:
        if s.proc.poll() is None:
            s.stop()
    assert wait_no_residue() == ([], [], [])
