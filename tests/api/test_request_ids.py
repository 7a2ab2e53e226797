"""Request ids (SPEC §11): X-Request-Id on every answer, the client's kept when valid, one log
line per request with method, path, status and duration, the id in the helper's line about each
run, and never a submission's source, input or output in the log."""
import re

import pytest
import requests

from conftest import Server

OURS = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def srv():
    s = Server().start()
    yield s
    assert s.stop() == 0, s.log_text()


def log_line(s, rid):
    lines = [l for l in s.log_text().splitlines() if l.startswith(f"req {rid} ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_valid_client_id_is_kept_and_logged(srv):
    r = srv.get("/health", headers={"X-Request-Id": "trace-A.1_b"})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "trace-A.1_b"
    assert re.fullmatch(r"req trace-A\.1_b GET /health 200 \d+\.\dms", log_line(srv, "trace-A.1_b"))
    r = srv.get("/no-such-route", headers={"X-Request-Id": "x" * 64})
    assert r.headers["X-Request-Id"] == "x" * 64
    assert re.fullmatch(r"req x{64} GET /no-such-route 404 \d+\.\dms", log_line(srv, "x" * 64))


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "semi;colon", "quote\"", "caf\u00e9"])
def test_an_invalid_client_id_is_replaced(srv, bad):
    r = requests.get(srv.url + "/health", headers={"X-Request-Id": bad.encode()}, timeout=10)
    rid = r.headers["X-Request-Id"]
    assert rid != bad and OURS.match(rid), rid
    log_line(srv, rid)
    assert bad not in srv.log_text()


def test_every_answer_has_an_id_and_ids_differ(srv):
    ids = {srv.get("/health").headers["X-Request-Id"] for _ in range(5)}
    ids.add(srv.post("/execute", {"runtime_id": "nope"}).headers["X-Request-Id"])
    assert len(ids) == 6 and all(OURS.match(i) for i in ids), ids


def test_the_id_follows_a_run_into_the_helper_and_nothing_of_the_submission_is_logged(srv):
    bash = srv.runtimes()["Bash"]
    rid = "follow-me-42"
    src = "# src-marker-5x1\nread a; echo \"$a\" | tr a-z A-Z; echo err-marker-3k >&2"
    r = srv.post("/execute", {"runtime_id": bash, "source_code": src, "input": "in-marker-9q2"},
                 headers={"X-Request-Id": rid})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"] == "IN-MARKER-9Q2\n"
    assert r.headers["X-Request-Id"] == rid
    assert re.fullmatch(rf"req {rid} POST /execute 200 \d+\.\dms", log_line(srv, rid))
    text = srv.log_text()
    helper = [l for l in text.splitlines() if l.startswith(f"envicutor helper: req {rid}: ")]
    assert len(helper) == 1 and "run in box" in helper[0] and ": OK," in helper[0], helper
    for secret in ("src-marker-5x1", "in-marker-9q2", "IN-MARKER-9Q2", "err-marker-3k"):
        assert secret not in text


def test_a_compile_and_a_run_each_log_their_id():
    # without the compile cache, whose archive of the box would be one more run
    s = Server(COMPILE_CACHE_SIZE=0).start()
    try:
        rts = s.runtimes()
        if "C" not in rts:
            pytest.skip("no C toolchain on this host")
        r = s.post("/execute", {"runtime_id": rts["C"], "source_code": "int main(void){return 3;}"},
                   headers={"X-Request-Id": "c-two-stages"})
        assert r.status_code == 200 and r.json()["run"]["exit_code"] == 3, r.text
        helper = [l for l in s.log_text().splitlines()
                  if l.startswith("envicutor helper: req c-two-stages: run in box")]
        assert [l.split(": ")[3].split(",")[0] for l in helper] == ["OK", "RE"], helper
    finally:
        assert s.stop() == 0, s.log_text()
