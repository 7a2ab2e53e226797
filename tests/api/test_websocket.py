"""GET /execute/ws (SPEC §9) through the real server, with a real WebSocket client
(python3-websocket)."""
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import requests
import websocket

from conftest import Server, wait_no_residue

ECHO = "import sys\nfor l in sys.stdin:\n    print(l.strip().upper(), flush=True)\n"


@pytest.fixture(scope="module")
def one():
    """A server with one submission slot."""
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1).start()
    yield s
    assert s.stop() == 0, s.log_text()


def connect(s, timeout=30, **kw):
    return websocket.create_connection(s.url.replace("http://", "ws://") + "/execute/ws",
                                       timeout=timeout, **kw)


def recv_json(ws):
    op, data = ws.recv_data()
    assert op == websocket.ABNF.OPCODE_TEXT, (op, data)
    return json.loads(data)


def until_close(ws):
    """Every message up to the close, and the close code."""
    msgs = []
    while True:
        op, data = ws.recv_data(control_frame=True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            return msgs, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if op == websocket.ABNF.OPCODE_TEXT:
            msgs.append(json.loads(data))


def start(s, runtime, source, **extra):
    ws = connect(s)
    ws.send(json.dumps({"type": "init", "runtime_id": s.runtimes()[runtime],
                        "source_code": source, **extra}))
    return ws


def until_ready(ws):
    seen = []
    while True:
        m = recv_json(ws)
        seen.append(m)
        if m["type"] == "ready":
            return seen


def test_echo_is_interactive(one):
    ws = start(one, "Python 3", ECHO)
    until_ready(ws)
    assert recv_json(ws) == {"type": "stage", "stage": "run"}
    # each answer arrives before the next line is sent: the program runs while we talk
    for word in ["one", "two", "three"]:
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": word + "\n"}))
        assert recv_json(ws) == {"type": "data", "stream": "stdout", "data": word.upper() + "\n"}
    ws.send(json.dumps({"type": "eof"}))
    msgs, code = until_close(ws)
    assert code == 1000
    assert [m["type"] for m in msgs] == ["exit"]
    assert msgs[0]["stage"] == "run" and msgs[0]["exit_code"] == 0
    assert msgs[0]["stdout"] == "" and msgs[0]["stderr"] == ""
    assert wait_no_residue() == ([], [], [])


def test_compiled_stage_order_and_stderr(one):
    src = ('#include <stdio.h>\nint main(void){char b[64];fgets(b,sizeof b,stdin);'
           'fprintf(stderr,"err\\n");printf("got %s",b);return 3;}\n')
    ws = start(one, "C", src)
    until_ready(ws)
    assert recv_json(ws) == {"type": "stage", "stage": "compile"}
    msgs = []
    while True:
        m = recv_json(ws)
        msgs.append(m)
        if m == {"type": "stage", "stage": "run"}:
            break
    assert msgs[-2]["type"] == "exit" and msgs[-2]["stage"] == "compile"
    assert msgs[-2]["exit_code"] == 0
    ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "x\n"}))
    msgs, code = until_close(ws)
    assert code == 1000
    data = {m["stream"]: m["data"] for m in msgs if m["type"] == "data"}
    assert data == {"stderr": "err\n", "stdout": "got x\n"}
    assert msgs[-1]["type"] == "exit" and msgs[-1]["stage"] == "run"
    assert msgs[-1]["exit_code"] == 3 and msgs[-1]["exit_status"] == "RE"


def http_hold(s, seconds):
    """An /execute holding the slot for `seconds` (its answer, later, in a list)."""
    out = []
    t = threading.Thread(target=lambda: out.append(s.execute(
        s.runtimes()["Bash"], f"sleep {seconds}", run_limits={"wall_time": seconds + 5})))
    t.start()
    return t, out


def wait_running(s, n):
    deadline = time.time() + 30
    while time.time() < deadline:
        text = s.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("envicutor_submissions_running ") and int(float(line.split()[1])) >= n:
                return
        time.sleep(0.05)
    raise AssertionError("the holder never ran")


def test_queue_positions_then_ready(one):
    t, out = http_hold(one, 3)
    wait_running(one, 1)
    a = start(one, "Python 3", ECHO)  # holds the slot until its eof
    assert recv_json(a) == {"type": "queued", "position": 0}
    b = start(one, "Python 3", "print(2)")
    assert recv_json(b) == {"type": "queued", "position": 1}
    # the holder ends: a gets the slot, b moves up
    assert recv_json(a) == {"type": "ready"}
    assert recv_json(b) == {"type": "queued", "position": 0}
    a.send(json.dumps({"type": "data", "stream": "stdin", "data": "a\n"}))
    a.send(json.dumps({"type": "eof"}))
    msgs, code = until_close(a)
    assert code == 1000 and {"type": "data", "stream": "stdout", "data": "A\n"} in msgs
    assert recv_json(b) == {"type": "ready"}
    msgs, code = until_close(b)
    assert code == 1000
    t.join()
    assert out[0].status_code == 200


def test_data_before_ready_is_refused(one):
    t, _ = http_hold(one, 2)
    wait_running(one, 1)
    ws = start(one, "Python 3", "print(1)")
    assert recv_json(ws)["type"] == "queued"
    ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "early\n"}))
    msgs, code = until_close(ws)
    assert code == 1008
    assert msgs[0]["type"] == "error"
    t.join()


def test_signal_ends_with_sg(one):
    ws = start(one, "Python 3", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    until_ready(ws)
    recv_json(ws)  # stage
    assert recv_json(ws)["data"] == "up\n"
    ws.send(json.dumps({"type": "signal", "signal": "SIGTERM"}))
    msgs, code = until_close(ws)
    assert code == 1000
    assert msgs[-1]["exit_status"] == "SG" and msgs[-1]["exit_signal"] == 15


def test_disconnect_kills_the_run(one):
    ws = start(one, "Python 3", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    until_ready(ws)
    recv_json(ws)
    assert recv_json(ws)["data"] == "up\n"
    ws.sock.close()  # gone without a close frame
    assert wait_no_residue(10) == ([], [], [])


def test_wall_time_limit(one):
    ws = start(one, "Python 3", "import time\ntime.sleep(60)\n", run_limits={"wall_time": 1})
    until_ready(ws)
    msgs, code = until_close(ws)
    assert code == 1000
    assert msgs[-1]["exit_status"] == "TO" and msgs[-1]["wall_time"] >= 1


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_slow_reader_does_not_grow_the_server(one):
    # 64 MiB of output against a client that reads nothing for a while
    src = "import sys\nb = b'x' * 65536\nfor _ in range(1024):\n    sys.stdout.buffer.write(b)\n"
    ws = start(one, "Python 3", src, run_limits={"wall_time": 20})
    until_ready(ws)
    before = rss_kb(one.proc.pid)
    time.sleep(3)  # the program fills the pipe and the socket, then blocks
    grown = rss_kb(one.proc.pid) - before
    assert grown < 8 * 1024, grown  # far below the 64 MiB written, which would show
    msgs, code = until_close(ws)
    got = sum(len(m["data"]) for m in msgs if m["type"] == "data")
    assert code == 1000
    assert got == 4194304  # MAX_OUTPUT_SIZE's default, the sum of both streams
    assert msgs[-1]["stdout_truncated"] is True


def test_bad_init_gives_the_execute_message(one):
    ws = start(one, "Python 3", "print(1)", run_limits={"wall_time": -1})
    msgs, code = until_close(ws)
    http = one.execute(one.runtimes()["Python 3"], "print(1)", run_limits={"wall_time": -1})
    assert http.status_code == 400
    assert msgs == [{"type": "error", "message": http.json()["message"]}]
    assert code == 1008


def test_plain_get_is_4xx(one):
    r = one.get("/execute/ws")
    assert 400 <= r.status_code < 500


def test_many_waiting_sockets(one):
    t, _ = http_hold(one, 4)
    wait_running(one, 1)
    socks = []
    try:
        for i in range(200):
            socks.append(start(one, "Python 3", "print(1)"))
        for ws in socks:
            m = recv_json(ws)
            assert m["type"] == "queued"
    finally:
        for ws in socks:
            ws.close()
    t.join()
    assert wait_no_residue(20) == ([], [], [])


def raw_upgrade(s):
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"GET /execute/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def closed_with(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def client_frame(opcode, payload, fin=True):
    """A client's frame, masked as RFC 6455 asks (mask key 1 2 3 4)."""
    key = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def server_frame(sock):
    """(opcode, payload) of the next frame the server sends (unmasked)."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data
    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    return b0 & 0x0F, exactly(n)


def server_json(sock):
    """The next text message, past any pong."""
    while True:
        op, data = server_frame(sock)
        if op == 1:
            return json.loads(data)
        assert op == 0xA, (op, data)


def test_frames_in_pieces_while_waiting(one):
    """A waiting session holds no framing state between frames (it is freed while the session
    is idle): an init in three fragments, and a ping sent a few bytes at a time while the
    session waits in the queue, each with pauses, are still read as one message and one
    ping, and the run goes on as usual."""
    t, out = http_hold(one, 3)
    wait_running(one, 1)
    sock = raw_upgrade(one)
    init = json.dumps({"type": "init", "runtime_id": one.runtimes()["Python 3"],
                       "source_code": "print(input()[::-1])"}).encode()
    third = len(init) // 3
    sock.sendall(client_frame(0x1, init[:third], fin=False))
    time.sleep(0.3)
    sock.sendall(client_frame(0x0, init[third:2 * third], fin=False))
    time.sleep(0.3)
    sock.sendall(client_frame(0x0, init[2 * third:]))
    assert server_json(sock) == {"type": "queued", "position": 0}
    ping = client_frame(0x9, b"are you there")
    for i in range(0, len(ping), 4):
        sock.sendall(ping[i:i + 4])
        time.sleep(0.1)
    while True:
        op, data = server_frame(sock)
        if op == 0xA:
            break
        assert op == 1 and json.loads(data)["type"] == "queued", (op, data)
    assert data == b"are you there"
    while server_json(sock)["type"] != "ready":
        pass
    sock.sendall(client_frame(0x1, json.dumps({"type": "data", "stream": "stdin",
                                                "data": "olleh\n"}).encode()))
    msgs = []
    while not msgs or msgs[-1]["type"] != "exit":
        msgs.append(server_json(sock))
    assert {"type": "data", "stream": "stdout", "data": "hello\n"} in msgs, msgs
    assert msgs[-1]["exit_code"] == 0
    op, data = server_frame(sock)
    assert op == 0x8 and struct.unpack("!H", data[:2])[0] == 1000
    sock.close()
    t.join()
    assert out[0].status_code == 200


@pytest.mark.parametrize("frame", [
    b"\x81\x05hello",                         # unmasked client frame
    # far over the maximum size (wslay judges a frame once some of its payload came)
    b"\x81\xff" + struct.pack("!Q", 1 << 40) + b"\0\0\0\0" + b"x" * 16,
])
def test_malformed_frame_closes_only_that_connection(one, frame):
    other = start(one, "Python 3", ECHO)
    until_ready(other)
    bad = raw_upgrade(one)
    bad.sendall(frame)
    data = closed_with(bad)
    assert data[:1] == b"\x88"  # a close frame, then the end of the connection
    # the other session and the server are fine
    recv_json(other)
    other.send(json.dumps({"type": "data", "stream": "stdin", "data": "ok\n"}))
    assert recv_json(other)["data"] == "OK\n"
    other.send(json.dumps({"type": "eof"}))
    assert until_close(other)[1] == 1000
    assert one.get("/health").status_code == 200


def gauge(s, name):
    for line in s.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(name + " not in /metrics")


def wait_gauge(s, name, value, timeout=30):
    deadline = time.time() + timeout
    while gauge(s, name) != value:
        assert time.time() < deadline, (name, gauge(s, name), value)
        time.sleep(0.02)


def test_open_sessions_gauge(one):
    # earlier tests' sessions end on the server's side after their clients saw the close
    wait_gauge(one, "envicutor_websockets_open", 0)
    a = start(one, "Python 3", ECHO)  # holds the one slot until its eof
    until_ready(a)  # the server answered: the session is the hub's and counted
    b = start(one, "Python 3", "print(1)")
    assert recv_json(b) == {"type": "queued", "position": 0}
    assert gauge(one, "envicutor_websockets_open") == 2
    a.send(json.dumps({"type": "eof"}))
    assert until_close(a)[1] == 1000
    assert until_close(b)[1] == 1000
    a.close()
    b.close()
    wait_gauge(one, "envicutor_websockets_open", 0)


def test_server_shutdown_closes_sessions_with_1001():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=1, SHUTDOWN_TIMEOUT=1).start()
    try:
        running = start(s, "Python 3", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
        until_ready(running)
        recv_json(running)  # stage
        assert recv_json(running)["data"] == "up\n"
        waiting = start(s, "Python 3", "print(1)")
        assert recv_json(waiting) == {"type": "queued", "position": 0}
    except BaseException:
        s.stop()
        raise
    s.proc.send_signal(signal.SIGTERM)
    msgs, code = until_close(waiting)
    assert code == 1001 and msgs[-1]["type"] == "error", msgs
    # the run outlives the one-second SHUTDOWN_TIMEOUT: it is killed, then its session closed
    msgs, code = until_close(running)
    assert code == 1001, msgs
    assert s.proc.wait(timeout=30) == 0
    s.log.close()
    assert "killing it" in s.log_text()
    assert wait_no_residue() == ([], [], [])
