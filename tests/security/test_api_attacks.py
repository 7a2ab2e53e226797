"""Hostile requests: malformed and deeply nested JSON, bodies that are huge or arrive one byte
a second, bad base64, NUL bytes, hostile limit values, shell metacharacters in every string
that reaches a script, and the server's own log."""
import base64
import json
import os
import re
import socket
import threading
import time

import pytest
import requests

from conftest import Attacked, check_host, stage


@pytest.fixture(scope="module")
def bash(srv):
    return srv.runtimes()["Bash"]


def post_raw(srv, path, data, **kw):
    return requests.post(srv.url + path, data=data, headers={"Content-Type": "application/json"},
                         timeout=kw.pop("timeout", 60), **kw)


@pytest.mark.parametrize("body", [
    "[" * 100000 + "]" * 100000,
    '{"a":' * 100000 + "1" + "}" * 100000,
    '{"runtime_id": 1, "source_code": "x", "run_limits": ' + "[" * 50000 + "]" * 50000 + "}",
    "", "{", "\x00", '{"runtime_id": 1, "source_code": "x"} trailing', "\xff\xfe{}",
    '{"runtime_id": 1, "runtime_id": 1, "source_code": "x"}',
    '{"runtime_id": 1e400, "source_code": "x"}', '{"runtime_id": 99999999999999999999999}',
    '{"runtime_id": -1, "source_code": "x"}', '{"runtime_id": 1, "source_code": ["x"]}',
    '{"runtime_id": "1", "source_code": "x"}', "null", "[]", '"str"',
])
def test_malformed_json_is_a_400(srv, body):
    r = post_raw(srv, "/execute", body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body)
    assert r.status_code == 400, r.text
    assert "message" in r.json()
    assert srv.get("/health").status_code == 200


# The configured maxima of the server under attack: SPEC §4's defaults (it sets none).
SPEC_MAXIMA = {
    "compile": {"wall_time": "60", "cpu_time": "30", "extra_time": "5", "memory": "1000000",
                "max_open_files": "512", "max_file_size": "100000",
                "max_number_of_processes": "512"},
    "run": {"wall_time": "60", "cpu_time": "30", "extra_time": "5", "memory": "1000000",
            "max_open_files": "64", "max_file_size": "100000", "max_number_of_processes": "64"},
}
# Above the maximum, SPEC §4's form ("Invalid run limits: wall_time can't exceed 60 seconds");
# below the minimum or of the wrong type, the whole range (README, "Bounds on limits").
EXCEEDS = "Invalid {stage} limits: {name} can't exceed {max}{unit}"
SECONDS = "Invalid {stage} limits: {name} must be a number of seconds from {min} to {max}"
KB = "Invalid {stage} limits: {name} must be a whole number of kilobytes from 1 to {max}"
COUNT = "Invalid {stage} limits: {name} must be a whole number from 1 to {max}"


@pytest.mark.parametrize("stage", ["compile", "run"])
@pytest.mark.parametrize("limits,form", [
    ({"memory": 1e308}, EXCEEDS.replace("{unit}", " kilobytes")),
    ({"memory": -1}, KB), ({"memory": -0.0}, KB),
    ({"wall_time": 0}, SECONDS.replace("{min}", "0.000001")),
    # positive, but below the resolution of one microsecond
    ({"cpu_time": 1e-320}, SECONDS.replace("{min}", "0.000001")),
    ({"max_number_of_processes": 1.5}, COUNT),
    ({"max_open_files": 2**63 - 1}, EXCEEDS.replace("{unit}", "")),
    ({"max_file_size": -2**63}, KB),
    ({"extra_time": -1e-9}, SECONDS.replace("{min}", "0")),
    ({"memory": "1"}, KB), ({"memory": True}, KB), ({"memory": [1]}, KB),
    ({"memory": {"$gt": 1}}, KB),
    ({"nonsense": 1}, "Invalid {stage} limits: unknown limit {name}"),
    # jansson refuses a NUL in a key while it parses, quoting the key as sent (escaped)
    ({"memory\u0000x": 1},
     r"""Invalid JSON: NUL byte in object key not supported near '"memory\u0000x"' (line 1, column *)"""),
])
def test_hostile_limit_values(srv, bash, stage, limits, form):
    name = next(iter(limits))
    expected = form.format(stage=stage, name=name, max=SPEC_MAXIMA[stage].get(name))
    r = srv.execute(bash, "echo ok", **{stage + "_limits": limits})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    head, star, tail = expected.partition("*")
    if star:
        assert message.startswith(head) and message.endswith(tail), (message, expected)
        assert message[len(head):len(message) - len(tail)].isdigit(), message
    else:
        assert message == expected


def test_invalid_base64_and_nul_bytes(srv, bash):
    for b in ["@@@@", "QQ=", "QQ==QQ==", "Q===", "=", "A", "QUJD\n", "QU\x00JD", "\u00e9\u00e9\u00e9\u00e9"]:
        r = srv.execute(bash, b, project=True)
        assert r.status_code == 400 and r.json()["message"].startswith("Invalid base64"), (b, r.text)
    run = stage(srv.execute(bash, "cat; printf 'x\\0y'", input="in\u0000put"))
    assert run["stdout"] == "in\x00put\nx\x00y"
    r = srv.post("/runtimes", {"name": "n\u0000ul", "provider": "host", "run_script": "x",
                               "source_file_name": "a"})
    assert r.status_code == 400
    r = srv.post("/runtimes", {"name": "nul-env", "provider": "host", "run_script": "x",
                               "source_file_name": "a", "env": {"A": "b\u0000c"}})
    assert r.status_code == 400


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/etc/passwd", "x\u0000y", "",
                                  "../../../../tmp/evil", "x" * 300])
def test_source_file_name_traversal(srv, name):
    r = srv.post("/runtimes", {"name": "trav" + str(len(name)) + name.replace("/", "_")[:20],
                               "provider": "host", "run_script": "cat *",
                               "source_file_name": name})
    assert r.status_code == 400, r.text


def test_shell_metacharacters_only_ever_reach_a_box(srv):
    pwned = os.path.join(srv.canary_dir, "pwned")
    inject = f"$(touch {pwned}); `touch {pwned}`; touch {pwned}; echo '\"|&' \n touch {pwned} #"
    name = "meta $(touch x);`id`|&'\"\n#"
    sfn = f"a;touch {pwned.replace('/', '_')}$(id)`id`|&'\" \n.sh"
    r = srv.post("/runtimes", {
        "name": name, "provider": "host", "source_file_name": sfn,
        "compile_script": f"echo compiled; {inject}",
        "run_script": f"echo \"$X\"; ls -A; {inject}",
        "env": {"X": inject, "BASH_ENV": f"/box/{sfn}", "PATH": f"/usr/bin:/bin:$(touch {pwned})",
                "IFS": "$(touch " + pwned + ")"},
    })
    assert r.status_code == 200, r.text
    rid = srv.runtimes()[name]
    j = srv.execute(rid, f"touch {pwned}; echo src", input=inject).json()
    # (IFS made of the letters of "touch" splits the script's words strangely: whatever the
    # stages answer, they ran in the box, and nothing ran on the host)
    assert j["compile"]["stdout"].startswith("compiled"), j["compile"]
    assert not os.path.exists(pwned)
    assert srv.delete(f"/runtimes/{rid}").status_code == 200
    assert not os.path.exists(pwned)
    check_host(srv)


def test_huge_body_is_refused_without_harm(srv, bash):
    body = b'{"runtime_id": 1, "source_code": "' + b"a" * (5 << 20) + b'"}'
    r = post_raw(srv, "/execute", body)
    assert r.status_code == 413, r.text[:300]
    # the same with Expect: 100-continue, answered before the body is sent
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
    assert b" 413 " in s.recv(4096)
    s.close()
    check_host(srv)


def test_log_lines_cannot_be_forged(srv):
    marker = "req 424242 GET /forged 200 0.1ms"
    requests.get(srv.url + "/x%0a" + marker.replace(" ", "%20") + "%0a", timeout=10)
    r = srv.post("/runtimes", {"name": "log\n" + marker + "\x1b[2J", "provider": "host",
                               "run_script": "cat main.sh", "source_file_name": "main.sh"})
    assert r.status_code == 200
    lines = srv.log_text().splitlines()
    assert not any(l.startswith(marker) for l in lines), [l for l in lines if "424242" in l]
    assert not any("\x1b" in l for l in lines)


# ---- slow clients ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def impatient():
    s = Attacked(CONNECTION_TIMEOUT=2).start()
    yield s
    assert s.stop() == 0, s.log_text()


def read_until_closed(sock):
    out = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return out
        out += chunk


def test_slowloris_does_not_block_others_and_idle_connections_time_out(impatient):
    s = impatient
    bash = s.runtimes()["Bash"]
    body = json.dumps({"runtime_id": bash, "source_code": "echo slow"}).encode()
    result = {}

    def trickle():
        c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        head = (f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        t = time.time()
        try:
            for i in range(0, 6):  # one byte a second, well inside the 2 s silence allowed
                c.sendall((head + body)[i:i + 1])
                time.sleep(1)
            c.sendall((head + body)[6:])
            result["answer"] = c.recv(65536)
        except OSError as e:
            result["error"] = e
        result["time"] = time.time() - t
        c.close()

    t = threading.Thread(target=trickle)
    t.start()
    time.sleep(0.5)
    # meanwhile others are served at once
    for _ in range(3):
        t0 = time.time()
        assert s.get("/health", timeout=5).status_code == 200
        assert stage(s.execute(bash, "echo fast", timeout=10))["stdout"] == "fast\n"
        assert time.time() - t0 < 3
    # a connection that says nothing, or stops in the middle of its headers, is closed
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=20)
    half = socket.create_connection(("127.0.0.1", s.port), timeout=20)
    half.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Le")
    t0 = time.time()
    assert idle.recv(100) == b""
    # closed (a socket timeout of 20 s fails the test), with nothing or an error status sent
    # first: never an answer as if the half-sent request had been complete
    answer = read_until_closed(half)
    assert answer == b"" or re.match(rb"HTTP/1\.[01] 4[0-9][0-9] ", answer), answer
    assert time.time() - t0 < 8
    t.join(30)
    assert b" 200 " in result.get("answer", b""), result
    check_host(s)
