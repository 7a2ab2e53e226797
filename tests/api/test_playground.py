"""The playground (SPEC §11, docs/playground.md): its files served at / and /static/ by a real
server, then the page itself in a real browser (Debian's headless Chromium, driven through the
DevTools protocol by the small client below) running a program that reads a line through the
WebSocket endpoint. The screenshot goes to $TEST_OUTPUT_DIR, or tests/output/ (gitignored)."""
import base64
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import ROOT, Server
from test_cluster import cluster  # noqa: F401 (a fixture)

WEB = os.path.join(ROOT, "web")
OUTPUT_DIR = os.environ.get("TEST_OUTPUT_DIR") or os.path.join(ROOT, "tests", "output")
KEY = "playground-test-key-0123456789"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def web_files():
    return sorted(os.listdir(WEB))


def web_bytes(name):
    with open(os.path.join(WEB, name), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def keyed():
    """A server with API keys: the page must be open, the API it calls must not be."""
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2, EXECUTE_API_KEYS=KEY).start()
    yield s
    assert s.stop() == 0, s.log_text()


def raw_get(server, path, method="GET", headers=None):
    """A request whose path is sent exactly as given (requests would normalise '..')."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


# ---- static serving -------------------------------------------------------------------------

def check_security_headers(h, port):
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == "no-cache"
    csp = [d.strip() for d in h["Content-Security-Policy"].split(";")]
    assert "default-src 'self'" in csp
    assert f"connect-src 'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port}" in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert not any("unsafe" in d or "*" in d for d in csp)


def test_the_page_is_served_at_the_root(server):
    r = server.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.content == web_bytes("index.html")
    check_security_headers(r.headers, server.port)


@pytest.mark.parametrize("name", web_files())
def test_each_file_with_its_type_and_headers(server, name):
    r = server.get("/static/" + name)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == TYPES[os.path.splitext(name)[1]]
    assert r.content == web_bytes(name)
    assert int(r.headers["Content-Length"]) == len(web_bytes(name))
    check_security_headers(r.headers, server.port)


def test_the_page_loads_nothing_from_elsewhere(server):
    """Every file the page names is one of ours; no URL of another host in any file (the SVG's
    XML namespace is a name, not a request)."""
    html = web_bytes("index.html").decode()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith("/static/") for ref in refs), refs
    for ref in refs:
        assert server.get(ref).status_code == 200, ref
    for name in web_files():
        text = web_bytes(name).decode()
        urls = set(re.findall(r"(?:https?|wss?)://[^\s\"')]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)


def test_head_sends_the_headers_without_the_body(server):
    status, h, body = raw_get(server, "/", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(h["Content-Length"]) == len(web_bytes("index.html"))
    assert h["Content-Type"] == "text/html; charset=utf-8"
    status, h, body = raw_get(server, "/static/playground.js", method="HEAD")
    assert (status, body) == (200, b"")
    assert h["Content-Type"] == TYPES[".js"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(server, method):
    for path in ("/", "/static/playground.js"):
        r = requests.request(method, server.url + path, data=b"x", timeout=30)
        assert r.status_code == 405, (method, path)


@pytest.mark.parametrize("path", [
    "/static/", "/static/nope.js", "/static/index.htm", "/index.html", "/playground.js",
    "/static/../Makefile", "/static/..%2fMakefile", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd", "/static/../../../../etc/passwd", "/static/web/index.html",
    "/static/./index.html", "/static/index.html/", "/static/INDEX.HTML",
    "/static/..", "/static/.", "/static/%2fetc%2fpasswd",
])
def test_unknown_paths_and_traversal_are_404(server, path):
    status, h, body = raw_get(server, path)
    assert status == 404, (path, body)
    assert json.loads(body)["message"].startswith("Not found")
    assert b"root:" not in body


def test_a_nul_in_the_path_names_no_other_file(server):
    """libmicrohttpd hands routes the path decoded, as a C string: "%00" ends it, for every
    route alike. Here that can only ever name an embedded file itself."""
    status, _, body = raw_get(server, "/static/index.html%00.png")
    assert (status, body) == (200, web_bytes("index.html"))
    status, _, _ = raw_get(server, "/static/%00../../etc/passwd")
    assert status == 404


def test_the_host_header_reaches_the_policy_only_when_it_is_a_host(server):
    status, h, _ = raw_get(server, "/", headers={"Host": "example.org:8080"})
    assert status == 200
    assert "connect-src 'self' ws://example.org:8080 wss://example.org:8080;" in \
        h["Content-Security-Policy"]
    for host in ("evil; script-src *", "a b", "x'y", "a\"b"):
        status, h, _ = raw_get(server, "/", headers={"Host": host})
        assert status in (200, 400), host  # libmicrohttpd may refuse a malformed Host itself
        if status == 200:
            csp = h["Content-Security-Policy"]
            assert "connect-src 'self'; " in csp and "script-src" not in csp, csp


def test_a_known_etag_is_answered_304(server):
    r = server.get("/static/playground.js")
    etag = r.headers["ETag"]
    again = server.get("/static/playground.js", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["ETag"] == etag
    other = server.get("/static/playground.css", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.content == web_bytes("playground.css")


def test_the_page_is_open_and_the_api_is_not(keyed):
    assert keyed.get("/").status_code == 200
    assert keyed.get("/static/playground.js").status_code == 200
    assert keyed.get("/runtimes").status_code == 401
    assert keyed.get("/runtimes", headers={"X-Auth-Token": KEY}).status_code == 200


def test_other_routes_are_unchanged(server):
    assert server.get("/health").text == "Up and running"
    assert server.get("/nothing").status_code == 404
    assert server.post("/health").status_code == 405
    status, _, _ = raw_get(server, "/health", method="HEAD")
    assert status == 405  # as before the playground: only its own routes take HEAD


# ---- a real browser -------------------------------------------------------------------------

class CDP:
    """A minimal client of the Chrome DevTools protocol over one page's WebSocket: commands
    answered by id; the events that arrive meanwhile are kept in order."""

    def __init__(self, url):
        import websocket  # python3-websocket (websocket-client)
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr, what, timeout=90):
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                page = self.evaluate("document.body.innerText")
                raise AssertionError(f"timed out waiting for {what}; the page says:\n{page}")
            time.sleep(0.05)

    def click(self, selector):
        """A real mouse click at the middle of the element."""
        box = self.evaluate(f"""(() => {{
            const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type_text(self, text):
        self.call("Input.insertText", text=text)

    def press_enter(self):
        self.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter",
                  windowsVirtualKeyCode=13, text="\r")
        self.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter",
                  windowsVirtualKeyCode=13)

    def close(self):
        self.ws.close()


def chromium_processes(session_id, profile):
    """Processes of our Chromium: its session (it was started in a new one), or any process
    that names its profile directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session_id or profile.encode() in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("chromium is not installed (Debian's package chromium; "
                    "scripts/install-deps --tests installs it)")
    profile = tempfile.mkdtemp(prefix="envicutor-chromium-")
    proc = subprocess.Popen(
        [exe, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--no-sandbox", "--no-first-run", "--no-default-browser-check", "--disable-gpu",
         "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--disable-default-apps", "--mute-audio",
         "--window-size=1280,900", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    lines = queue.Queue()
    log = []

    def drain():  # also keeps Chromium from blocking on a full stderr pipe
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            log.append(line)
            lines.put(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    cdp = None
    try:
        deadline = time.monotonic() + 60
        endpoint = None
        while endpoint is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("Chromium did not start:\n" + "".join(log))
            m = re.search(r"DevTools listening on (ws://[^\s]+)", line)
            if m:
                endpoint = m.group(1)
        port = int(re.match(r"ws://[^:/]+:(\d+)/", endpoint).group(1))
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
                 if t["type"] == "page"]
        cdp = CDP(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            cdp.call(domain + ".enable")
        yield cdp
    finally:
        if cdp:
            cdp.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stderr.close()
        # Anything of it that left the process group: killed too, and then none may be left.
        deadline = time.monotonic() + 10
        while True:
            left = chromium_processes(proc.pid, profile)
            if not left or time.monotonic() > deadline:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        shutil.rmtree(profile, ignore_errors=True)
        assert left == [], f"Chromium processes left: {left}"


def text_of(cdp, selector):
    return cdp.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
        return e ? e.textContent : null; }})()""")


def open_page(cdp, server):
    cdp.events.clear()
    cdp.call("Page.navigate", url=server.url + "/")
    cdp.wait_for("document.readyState === 'complete' && document.getElementById('runtime') "
                 "!== null", "the page to load")


def enter_key_and_pick_python(cdp, server):
    cdp.wait_for("!document.getElementById('notice').hidden && "
                 "document.getElementById('notice').textContent.includes('API key')",
                 "the page to ask for an API key")
    assert cdp.evaluate("document.getElementById('run').disabled") is True
    cdp.click("#api-key")
    cdp.type_text(KEY)
    cdp.evaluate("document.getElementById('api-key').blur()")  # commits it: 'change'
    # every runtime of the API is offered, by name
    listed = requests.get(server.url + "/runtimes", headers={"X-Auth-Token": KEY},
                          timeout=30).json()
    assert any(r["name"] == "Python 3" for r in listed), listed
    cdp.wait_for("document.getElementById('runtime').options.length === %d && "
                 "!document.getElementById('runtime').disabled" % len(listed),
                 "the runtime list")
    options = cdp.evaluate("[...document.getElementById('runtime').options]"
                           ".map(o => [o.value, o.textContent])")
    assert sorted(int(v) for v, _ in options) == sorted(r["id"] for r in listed)
    for r in listed:
        assert [str(r["id"]), f"{r['name']}  (#{r['id']})"] in options
    assert cdp.evaluate("document.getElementById('notice').hidden") is True
    python = [r["id"] for r in listed if r["name"] == "Python 3"][0]
    cdp.evaluate(f"""(() => {{ const s = document.getElementById('runtime');
        s.value = '{python}'; s.dispatchEvent(new Event('change')); }})()""")
    cdp.wait_for("document.getElementById('file-name').textContent === 'main.py'",
                 "the runtime's details")


def put_program(cdp, program):
    cdp.click("#editor")
    cdp.evaluate("document.getElementById('editor').select()")
    cdp.type_text(program)
    assert cdp.evaluate("document.getElementById('editor').value") == program


def record_statuses(cdp):
    cdp.evaluate("""(() => { window.__statuses = [];
        const s = document.getElementById('status');
        new MutationObserver(() => window.__statuses.push(s.textContent))
            .observe(s, {childList: true, characterData: true, subtree: true}); })()""")


def requests_made(cdp):
    return [e["params"]["request"]["url"] for e in cdp.events
            if e["method"] == "Network.requestWillBeSent"]


def page_errors(cdp):
    out = []
    for e in cdp.events:
        if e["method"] == "Runtime.exceptionThrown":
            out.append(e["params"]["exceptionDetails"])
        elif e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
            entry = e["params"]["entry"]
            # the page's first GET /runtimes, sent before it has a key, is answered 401
            if entry.get("source") == "network" and entry.get("url", "").endswith("/runtimes") \
                    and "401" in entry["text"]:
                continue
            out.append(entry)
    return out


PROGRAM = """import sys
name = input("What is your name? ")
print(f"debug: {len(name)} characters", file=sys.stderr)
print(f"Hello, {name[::-1].upper()}!")
"""


def test_a_program_that_reads_a_line_in_the_browser(keyed, browser):
    cdp = browser
    open_page(cdp, keyed)
    enter_key_and_pick_python(cdp, keyed)
    put_program(cdp, PROGRAM)
    record_statuses(cdp)
    cdp.click("#run")
    # The prompt is on the page only once the program has written it and waits on input().
    cdp.wait_for("document.getElementById('output').textContent === 'What is your name? '",
                 "the program's prompt")
    assert cdp.evaluate("document.getElementById('stdin').disabled") is False
    assert text_of(cdp, "#stages [data-stage=run]") == "run"
    cdp.click("#stdin")
    cdp.type_text("ada lovelace")
    cdp.press_enter()
    cdp.wait_for("document.getElementById('status').dataset.state === 'done'",
                 "the run to finish")
    out = text_of(cdp, "#output")
    assert out == ("What is your name? ada lovelace\n" "debug: 12 characters\n"
                   "Hello, ECALEVOL ADA!\n") or out == (
        "What is your name? ada lovelace\n" "Hello, ECALEVOL ADA!\n" "debug: 12 characters\n")
    assert text_of(cdp, "#output .stdin") == "ada lovelace\n"
    assert text_of(cdp, "#output .stderr") == "debug: 12 characters\n"
    assert "Hello, ECALEVOL ADA!" in cdp.evaluate(
        "[...document.querySelectorAll('#output .stdout')].map(e => e.textContent).join('')")
    assert cdp.evaluate("getComputedStyle(document.querySelector('#output .stderr')).color") != \
        cdp.evaluate("getComputedStyle(document.querySelector('#output .stdout')).color")
    statuses = cdp.evaluate("window.__statuses")
    assert any(s.startswith("Waiting") for s in statuses), statuses
    assert "Running" in statuses and statuses[-1] == "Finished", statuses

    m = "#metrics table[data-stage=run] td[data-field=%s]"
    assert text_of(cdp, m % "status") == "OK"
    assert text_of(cdp, m % "exit_code") == "0"
    assert text_of(cdp, m % "exit_signal") == "—"
    assert re.fullmatch(r"\d+\.\d (ms)|\d+\.\d{3} s", text_of(cdp, m % "cpu_time"))
    assert re.fullmatch(r"\d+\.\d (ms)|\d+\.\d{3} s", text_of(cdp, m % "wall_time"))
    memory = re.fullmatch(r"(\d+) KB|(\d+\.\d) MB", text_of(cdp, m % "memory"))
    assert memory and float(memory.group(1) or memory.group(2)) > 0
    assert text_of(cdp, "#stages [data-stage=run]") == "run"
    assert cdp.evaluate("document.querySelector('#stages [data-stage=run]').dataset.state") == "ok"

    os.makedirs(OUTPUT_DIR, exist_ok=True)
    shot = cdp.call("Page.captureScreenshot", format="png")
    with open(os.path.join(OUTPUT_DIR, "playground.png"), "wb") as f:
        f.write(base64.b64decode(shot["data"]))

    origin = keyed.url + "/"
    ws_origin = f"ws://127.0.0.1:{keyed.port}/"
    made = requests_made(cdp)
    assert made and all(u.startswith(origin) or u.startswith(ws_origin) for u in made), made
    assert page_errors(cdp) == []


def test_eof_and_a_signal_from_the_page(keyed, browser):
    cdp = browser
    open_page(cdp, keyed)
    # the key is kept for the tab's session
    cdp.wait_for("document.getElementById('api-key').value === %s" % json.dumps(KEY),
                 "the key kept by the page")
    cdp.wait_for("document.getElementById('file-name').textContent === 'main.py'",
                 "Python chosen")
    put_program(cdp, "import sys\nprint('ready', flush=True)\n"
                     "print(sum(int(x) for x in sys.stdin))\n")
    cdp.click("#run")
    cdp.wait_for("document.getElementById('output').textContent === 'ready\\n'",
                 "the program to start")
    for n in ("20", "22"):
        cdp.click("#stdin")
        cdp.type_text(n)
        cdp.press_enter()
    cdp.click("#eof")
    cdp.wait_for("document.getElementById('status').dataset.state === 'done'",
                 "the run to finish")
    assert text_of(cdp, "#output .stdout:last-child") == "42\n"
    assert cdp.evaluate("document.getElementById('stdin').disabled") is True

    # a program that never ends, stopped with SIGTERM from the page
    put_program(cdp, "import time\nprint('looping', flush=True)\nwhile True:\n"
                     "    time.sleep(1)\n")
    cdp.click("#run")
    cdp.wait_for("document.getElementById('output').textContent === 'looping\\n'",
                 "the program to start")
    cdp.evaluate("document.getElementById('signal').value = 'SIGTERM'")
    cdp.click("#send-signal")
    cdp.wait_for("document.querySelector('#metrics table[data-stage=run]') !== null",
                 "the run's metrics")
    m = "#metrics table[data-stage=run] td[data-field=%s]"
    assert text_of(cdp, m % "status").startswith("SG")
    assert text_of(cdp, m % "exit_signal") == str(int(signal.SIGTERM))
    cdp.wait_for("document.getElementById('run').disabled === false", "the page to be idle")
    assert page_errors(cdp) == []


def test_on_a_cluster_api_node_the_page_says_why_nothing_runs(cluster, browser):
    """An API node of a cluster runs no code, so /execute/ws refuses with an `error` message
    (docs/cluster.md): the page shows that message and an error state, not a bare close."""
    from test_cluster import RUNTIME_ID
    redis, api, ws = cluster(workers=1)
    cdp = browser
    open_page(cdp, api)
    cdp.wait_for("[...document.getElementById('runtime').options].some(o => o.value === '%d') "
                 "&& !document.getElementById('runtime').disabled" % RUNTIME_ID,
                 "the runtime list")
    cdp.evaluate(f"""(() => {{ const s = document.getElementById('runtime');
        s.value = '{RUNTIME_ID}'; s.dispatchEvent(new Event('change')); }})()""")
    put_program(cdp, "echo hi")
    cdp.click("#run")
    cdp.wait_for("document.getElementById('status').dataset.state === 'error'",
                 "the refusal")
    out = text_of(cdp, "#output")
    assert "not available on an API node of a cluster" in out, out
    assert "connection closed" not in out, out
    assert text_of(cdp, "#status") == "Error"
    cdp.wait_for("document.getElementById('run').disabled === false", "the page to be idle")
    assert "attempt 1 started" not in ws[0].log_text()
