"""The long-running server under valgrind: requests of every kind, a client abort and a
graceful stop leave no leak and no memory error in it. (The privileged helper is a fresh image
of the binary, started with exec, so it runs natively: valgrind cannot emulate the sandbox's
rlimits.)"""
import os
import shutil
import subprocess
import time

import json

import pytest
import requests
import websocket

from conftest import BIN, Server

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")


class ValgrindServer(Server):
    def start(self, timeout=180):
        self.vg_log = self.log_path + ".valgrind"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
             "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=9",
             "--log-file=" + self.vg_log, BIN, "serve"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                # the first answers of a server under valgrind can be slow: a read that times
                # out is one more try, not a failure
                if requests.get(self.url + "/health", timeout=10).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start under valgrind: " + self.log_text())


def test_no_leaks_and_no_memory_errors_in_the_server():
    s = ValgrindServer(MAX_CONCURRENT_SUBMISSIONS=2).start()
    try:
        ids = {r["name"]: r["id"] for r in s.get("/runtimes").json()}
        py = ids["Python 3"]
        for i in range(10):
            r = s.post("/execute", {"runtime_id": py, "source_code": "print(input())",
                                    "input": f"line {i}"})
            assert r.json()["run"]["stdout"] == f"line {i}\n"
        if "C" in ids:
            r = s.post("/execute", {"runtime_id": ids["C"], "source_code": "int main(){return 3;}"})
            assert r.json()["run"]["exit_code"] == 3
        assert s.post("/execute", {"runtime_id": py, "source_code": "x", "run_limits":
                                   {"memory": -1}}).status_code == 400
        assert requests.post(s.url + "/execute", data="{not json",
                             headers={"Content-Type": "application/json"}).status_code == 400
        assert s.get("/nowhere").status_code == 404
        # judge mode: a stored file, a built-in checker, a custom checker, an interactor, the
        # compile cache (the same C program twice), a bad request
        fid = requests.post(s.url + "/files", data=b"7\n", timeout=60).json()["id"]
        tests = [{"input_file": fid, "expected_output": "14"}, {"input": "1", "expected_output": "3"}]
        r = s.post("/execute", {"runtime_id": py, "source_code": "print(int(input()) * 2)",
                                "tests": tests, "checker": "tokens"})
        assert [t["verdict"] for t in r.json()["tests"]] == ["AC", "WA"], r.text
        chk = "import sys\nsys.exit(0 if open('output').read() == open('expected_output').read() else 1)"
        r = s.post("/execute", {"runtime_id": py, "source_code": "print(input())",
                                "tests": [{"input": "a", "expected_output": "a\n"}],
                                "checker": {"runtime_id": py, "source_code": chk}})
        assert r.json()["verdict"] == "AC", r.text
        inter = "import sys\nprint('ping', flush=True)\nsys.exit(0 if input() == 'pong' else 1)"
        r = s.post("/execute", {"runtime_id": py, "source_code": "input()\nprint('pong')",
                                "tests": [{"input": ""}],
                                "interactor": {"runtime_id": py, "source_code": inter}})
        assert r.json()["verdict"] == "AC", r.text
        if "C" in ids:
            for _ in range(2):
                r = s.post("/execute", {"runtime_id": ids["C"], "source_code": "int main(){}",
                                        "tests": [{"input": ""}]})
                assert r.json()["verdict"] == "AC", r.text
        assert s.post("/execute", {"runtime_id": py, "source_code": "x",
                                   "tests": [5]}).status_code == 400
        assert requests.delete(s.url + f"/files/{fid}", timeout=60).status_code == 200
        r = s.post("/runtimes", {"name": "Leak check", "provider": "host",
                                 "run_script": "cat main.txt", "source_file_name": "main.txt"})
        assert r.status_code == 200
        new = [x["id"] for x in s.get("/runtimes").json() if x["name"] == "Leak check"][0]
        assert s.get(f"/runtimes/{new}").status_code == 200
        assert requests.delete(s.url + f"/runtimes/{new}").status_code == 200
        # interactive sessions: one run to its end, one that leaves while it runs
        ws_url = s.url.replace("http://", "ws://") + "/execute/ws"
        ws = websocket.create_connection(ws_url, timeout=120)
        ws.send(json.dumps({"type": "init", "runtime_id": py, "source_code": "print(input())"}))
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "hi\n"}))
        seen = []
        while True:
            op, data = ws.recv_data(control_frame=True)
            if op == websocket.ABNF.OPCODE_CLOSE:
                break
            seen.append(json.loads(data))
        assert {"type": "data", "stream": "stdout", "data": "hi\n"} in seen, seen
        ws.close()
        ws = websocket.create_connection(ws_url, timeout=120)
        ws.send(json.dumps({"type": "init", "runtime_id": py,
                            "source_code": "print('up', flush=True)\ninput()"}))
        while json.loads(ws.recv()).get("type") != "data":
            pass
        ws.close()
        with pytest.raises(requests.exceptions.Timeout):  # a client that goes away
            requests.post(s.url + "/execute", json={"runtime_id": py, "source_code":
                                                    "import time; time.sleep(30)"}, timeout=0.3)
        time.sleep(1)
    finally:
        rc = s.stop(timeout=120)
    with open(s.vg_log) as f:
        report = f.read()
    assert "definitely lost: 0 bytes" in report or "All heap blocks were freed" in report, report
    assert "ERROR SUMMARY: 0 errors" in report, report
    assert rc == 0, report
