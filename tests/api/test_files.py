"""The file store (SPEC §8): POST /files, GET /files/{id}, DELETE /files/{id}, its bounds, its
persistence, and what an interrupted upload leaves (nothing)."""
import hashlib
import os
import signal
import socket
import stat
import subprocess
import time

import pytest
import requests

from conftest import BIN, Server

NO_CATALOG = {"ENVICUTOR_CATALOG": "/nonexistent"}  # these servers need no runtime


def sha(data):
    return hashlib.sha256(data).hexdigest()


def upload(s, data, **kw):
    return requests.post(s.url + "/files", data=data, timeout=120, **kw)


def files_dir(s):
    return os.path.join(s.data_dir, "files")


@pytest.fixture(scope="module")
def fs():
    s = Server(**NO_CATALOG).start()
    yield s
    assert s.stop() == 0, s.log_text()


def test_round_trip_of_binary_bytes(fs):
    data = bytes(range(256)) * 3 + b"\x00\x00\xff\xfe\r\n\x00"
    r = upload(fs, data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sha(data), "size": len(data)}
    g = fs.get("/files/" + sha(data))
    assert g.status_code == 200
    assert g.headers["Content-Type"] == "application/octet-stream"
    assert g.content == data
    d = fs.delete("/files/" + sha(data))
    assert d.status_code == 200, d.text
    gone = {"message": f"File with id: {sha(data)} does not exist"}
    g = fs.get("/files/" + sha(data))
    assert (g.status_code, g.json()) == (404, gone)
    d = fs.delete("/files/" + sha(data))
    assert (d.status_code, d.json()) == (404, gone)


def test_stored_file_is_read_only_and_named_by_its_hash(fs):
    data = b"stored \x00 as it is\n"
    assert upload(fs, data).json()["id"] == sha(data)
    path = os.path.join(files_dir(fs), sha(data))
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444 and st.st_nlink == 1
    with open(path, "rb") as f:
        assert f.read() == data


def test_several_megabytes_round_trip_byte_exact(fs):
    data = os.urandom(8 << 20)
    r = upload(fs, data)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sha(data), "size": len(data)}
    g = fs.get("/files/" + sha(data))
    assert g.status_code == 200 and len(g.content) == len(data) and g.content == data


def test_chunked_upload_and_empty_file(fs):
    data = b"".join(bytes([i]) * 70000 for i in range(40))  # 2.8 MB in pieces, no length
    r = upload(fs, iter([data[i:i + 65536] for i in range(0, len(data), 65536)]))
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sha(data), "size": len(data)}
    assert fs.get("/files/" + sha(data)).content == data
    r = upload(fs, b"")
    assert r.json() == {"id": sha(b""), "size": 0}
    g = fs.get("/files/" + sha(b""))
    assert g.status_code == 200 and g.content == b""


@pytest.mark.parametrize("bad", [
    "abc", "0" * 63, "0" * 65, "A" * 64, "g" + "0" * 63, "..%2f" + "0" * 60, "0" * 64 + "/x", "",
])
def test_malformed_id_is_400(fs, bad):
    for method in ("GET", "DELETE"):
        r = requests.request(method, fs.url + "/files/" + bad, timeout=30)
        assert r.status_code == 400, (method, bad, r.text)
        assert "Invalid file id" in r.json()["message"]


def test_wrong_methods(fs):
    assert fs.get("/files").status_code == 405
    assert requests.put(fs.url + "/files/" + "0" * 64, data=b"x", timeout=30).status_code == 405


def test_bounds_idempotence_and_restart():
    """MAX_FILE_SIZE_UPLOAD, not MAX_REQUEST_SIZE, bounds an upload; FILE_STORE_SIZE bounds all
    files, each counted once however often it is sent, and recounted at start."""
    env = dict(NO_CATALOG, MAX_REQUEST_SIZE=1024, MAX_FILE_SIZE_UPLOAD=4096, FILE_STORE_SIZE=10000)
    s = Server(**env).start()
    try:
        x, y = os.urandom(3000), os.urandom(4096)
        assert upload(s, x).json() == {"id": sha(x), "size": 3000}  # above MAX_REQUEST_SIZE
        assert upload(s, y).json() == {"id": sha(y), "size": 4096}
        r = upload(s, os.urandom(4097))
        assert r.status_code == 413
        assert r.json()["message"] == "The file is larger than 4096 bytes (MAX_FILE_SIZE_UPLOAD)"
        r = upload(s, iter([b"a" * 4000, b"b" * 97]))  # chunked: cut off at the bound
        assert r.status_code == 413
        # other routes keep MAX_REQUEST_SIZE
        r = s.post("/execute", {"runtime_id": 1, "source_code": "x" * 2000})
        assert r.status_code == 413
        assert r.json()["message"] == "The request body is larger than 1024 bytes"

        # 7096 stored: sending both again counts nothing
        for data in (x, y, x):
            assert upload(s, data).json() == {"id": sha(data), "size": len(data)}
        z = os.urandom(10000 - 7096)
        assert upload(s, z).status_code == 200  # exactly full
        w = b"w"
        r = upload(s, w)
        assert r.status_code == 507, r.text
        assert "FILE_STORE_SIZE" in r.json()["message"]
        assert upload(s, x).status_code == 200  # already stored: fine even when full
        assert s.delete("/files/" + sha(y)).status_code == 200
        assert upload(s, w).json() == {"id": sha(w), "size": 1}
    finally:
        assert s.stop() == 0, s.log_text()

    # 3000 + 2904 + 1 = 5905 stored; a new server counts them from the directory
    s = Server(data_dir=s.data_dir, **env).start()
    try:
        for data in (x, z, w):
            assert s.get("/files/" + sha(data)).content == data
        assert s.get("/files/" + sha(y)).status_code == 404
        assert upload(s, os.urandom(4096)).status_code == 507
        assert upload(s, os.urandom(4095)).status_code == 200
    finally:
        assert s.stop() == 0, s.log_text()


@pytest.mark.parametrize("var,value", [
    ("MAX_FILE_SIZE_UPLOAD", "0"), ("MAX_FILE_SIZE_UPLOAD", "1 GB"),
    ("MAX_FILE_SIZE_UPLOAD", str(2**40 + 1)), ("FILE_STORE_SIZE", "-1"),
    ("FILE_STORE_SIZE", ""), ("FILE_STORE_SIZE", str(2**50 + 1)),
])
def test_bad_file_store_bounds_stop_the_start(var, value):
    p = subprocess.run([BIN, "serve"], env={var: value, "ENVICUTOR_DATA_DIR": "/tmp/unused"},
                       capture_output=True, timeout=10)
    assert p.returncode == 2
    assert var in p.stderr.decode()


def test_help_names_the_file_store_bounds():
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, timeout=10)
    assert b"MAX_FILE_SIZE_UPLOAD" in p.stdout and b"FILE_STORE_SIZE" in p.stdout


def wait_until(cond, what, timeout=60):
    """A bound against a hang only: each wait is for a condition the test brings about."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


def unnamed_uploads(s):
    """The server's descriptors on unnamed files of the store's directory (uploads under way)."""
    out = []
    fd_dir = f"/proc/{s.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except FileNotFoundError:
            continue
        if target.startswith(files_dir(s) + "/#"):
            out.append(target)
    return out


def start_partial_upload(s, total, sent):
    """Sends the headers and `sent` of `total` bytes of an upload, and waits (on the server's
    descriptors, not a clock) until the server holds them in an unnamed file."""
    c = socket.create_connection(("127.0.0.1", s.port))
    c.sendall(b"POST /files HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    c.sendall(b"p" * sent)
    wait_until(lambda: unnamed_uploads(s), "the server to hold the upload")
    return c


def test_aborted_and_killed_uploads_leave_nothing():
    # libmicrohttpd was once seen (ASan build) to notice a client's close in the middle of a
    # body only at CONNECTION_TIMEOUT: a short one makes the drop certain either way.
    env = dict(NO_CATALOG, FILE_STORE_SIZE=3 << 20, CONNECTION_TIMEOUT=3)
    s = Server(**env).start()
    try:
        kept = os.urandom(1 << 20)
        assert upload(s, kept).status_code == 200
        c = start_partial_upload(s, 3 << 20, 2 << 20)
        c.close()
        # the server drops it when it sees the client go
        wait_until(lambda: not unnamed_uploads(s), "the server to drop the upload")
        assert os.listdir(files_dir(s)) == [sha(kept)]
        c = start_partial_upload(s, 3 << 20, 2 << 20)
    finally:
        s.stop(signal.SIGKILL)
    c.close()
    # a copy that was interrupted (the path for file systems without O_TMPFILE) leaves a name
    with open(os.path.join(files_dir(s), ".tmp-1-0"), "wb") as f:
        f.write(b"half")
    s = Server(data_dir=s.data_dir, **env).start()
    try:
        assert os.listdir(files_dir(s)) == [sha(kept)]
        # only the kept file counts: exactly the rest fits
        assert upload(s, os.urandom(2 << 20)).status_code == 200
        assert upload(s, b"one more").status_code == 507
    finally:
        assert s.stop() == 0, s.log_text()


EXEC, ADMIN = "execute-key-abcdef", "admin-key-0123456789"


def test_api_keys():
    s = Server(ADMIN_API_KEYS=ADMIN, EXECUTE_API_KEYS=EXEC, **NO_CATALOG).start()
    try:
        data = b"secret test\n"
        path = "/files/" + sha(data)
        assert upload(s, data).status_code == 401
        assert upload(s, data, headers={"Authorization": "Bearer wrong-key-123"}).status_code \
            == 401
        r = upload(s, data, headers={"Authorization": f"Bearer {EXEC}"})
        assert r.status_code == 200 and r.json()["id"] == sha(data)
        assert s.get(path).status_code == 401
        assert s.delete(path).status_code == 401
        assert s.get(path, headers={"X-Auth-Token": EXEC}).content == data
        assert s.get(path, headers={"X-Auth-Token": ADMIN}).content == data
        assert s.delete(path, headers={"X-Auth-Token": EXEC}).status_code == 200
    finally:
        assert s.stop() == 0, s.log_text()
