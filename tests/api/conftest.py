"""Helpers for the API tests: each server is the real `envicutor serve` binary, started as root
on a free port with a data directory of its own, spoken to over HTTP."""
import base64
import io
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import zipfile

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ENVICUTOR_BIN", os.path.join(ROOT, "build", "envicutor"))
CATALOG = os.path.join(ROOT, "runtimes", "catalog")
RUN_DIR = os.environ.get("ENVICUTOR_RUN_DIR", "/run/envicutor")
FIRST_UID, N_BOXES = 60000, 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir=None, **env):
        # under /tmp itself: the server's unprivileged user must be able to reach it
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PORT": str(self.port),
                    "ENVICUTOR_DATA_DIR": self.data_dir, "ENVICUTOR_CATALOG": CATALOG}
        self.env.update({k: str(v) for k, v in env.items()})
        self.log_path = os.path.join(tempfile.gettempdir(), f"envicutor-api-{self.port}.log")
        self.proc = None
        self.binary = BIN

    def start(self, timeout=60):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_text()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start: " + self.log_text())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def helper_pid(self):
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    # ---- HTTP
    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def post(self, path, body=None, **kw):
        return requests.post(self.url + path, json=body, timeout=kw.pop("timeout", 120), **kw)

    def delete(self, path, **kw):
        return requests.delete(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def runtimes(self):
        return {r["name"]: r["id"] for r in self.get("/runtimes").json()}

    def add_host_runtime(self, name, run_script, source_file_name="main.sh", compile_script="",
                         env=None):
        body = {"name": name, "provider": "host", "run_script": run_script,
                "compile_script": compile_script, "source_file_name": source_file_name}
        if env is not None:
            body["env"] = env
        r = self.post("/runtimes", body)
        assert r.status_code == 200, r.text
        return self.runtimes()[name]

    def execute(self, runtime_id, source, input=None, project=False, timeout=120, **limits):
        body = {"runtime_id": runtime_id, "source_code": source}
        if input is not None:
            body["input"] = input
        body.update(limits)
        return self.post("/execute" + ("?is_project=true" if project else ""), body,
                         timeout=timeout)


def zip_b64(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return base64.b64encode(buf.getvalue()).decode()


def descendants(pid):
    """Every process below pid (threads' children included)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except FileNotFoundError:
            pass
    return out


def box_processes():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                uid = os.stat("/proc/" + pid).st_uid
            except FileNotFoundError:
                continue
            if FIRST_UID <= uid < FIRST_UID + N_BOXES:
                out.append(int(pid))
    return out


def box_cgroups():
    found = []
    for base, _, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(base).startswith("box-") and "/envicutor/" in base:
            found.append(base)
    return found


def box_mounts():
    with open("/proc/self/mountinfo") as f:
        return [l for l in f if RUN_DIR + "/boxes" in l or RUN_DIR + "/root" in l]


def wait_no_residue(timeout=5):
    """Waits until no box process, run cgroup or box mount is left; returns what is left."""
    deadline = time.time() + timeout
    while True:
        left = (box_processes(), box_cgroups(), box_mounts())
        if left == ([], [], []) or time.time() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(scope="session")
def server():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=4).start()
    yield s
    assert s.stop() == 0, s.log_text()


def catalog_entries():
    out = []
    for f in sorted(os.listdir(CATALOG)):
        if f.endswith(".json"):
            with open(os.path.join(CATALOG, f)) as fh:
                out.append(json.load(fh))
    return out
