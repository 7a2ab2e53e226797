"""SPEC §5 through HTTP: concurrency limit, FIFO with exclusive installs, the bounded queue,
client aborts, graceful shutdown — and nothing left behind."""
import signal
import threading
import time

import pytest
import requests

from conftest import Server, descendants, wait_no_residue


def in_threads(fns):
    results = [None] * len(fns)

    def run(i, fn):
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    return threads, results


@pytest.fixture(scope="module")
def small():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2, MAX_QUEUED_REQUESTS=3).start()
    yield s
    assert s.stop() == 0


def test_twice_the_limit_takes_two_rounds(small):
    bash = small.runtimes()["Bash"]
    t0 = time.time()
    threads, res = in_threads([lambda: small.execute(bash, "sleep 1; echo done")] * 4)
    for t in threads:
        t.join()
    took = time.time() - t0
    assert all(r.status_code == 200 and r.json()["run"]["stdout"] == "done\n" for r in res)
    assert 1.9 < took < 3.5, took


def test_queue_full_answers_503_at_once(small):
    bash = small.runtimes()["Bash"]
    # 2 run, 3 wait: the 6th finds the queue full
    threads, res = in_threads([lambda: small.execute(bash, "sleep 1.5")] * 5)
    time.sleep(0.5)
    t0 = time.time()
    r = small.execute(bash, "true")
    assert r.status_code == 503 and "queue" in r.json()["message"]
    # at once: waiting for a place would take the running programs' 1.5 s
    assert time.time() - t0 < 1.0
    for t in threads:
        t.join()
    assert all(x.status_code == 200 for x in res)


def test_install_waits_for_running_and_holds_back_new(small):
    bash = small.runtimes()["Bash"]
    events = []

    def submission(tag, delay):
        time.sleep(delay)
        r = small.execute(bash, "sleep 1")
        events.append((tag, time.time()))
        return r

    def install():
        time.sleep(0.3)
        r = small.post("/runtimes", {"name": "Late", "provider": "host", "run_script": "cat x",
                                     "source_file_name": "x"})
        events.append(("install", time.time()))
        return r

    t0 = time.time()
    threads, res = in_threads([lambda: submission("first", 0), install,
                               lambda: submission("after", 0.6)])
    # listing is never blocked, even while the installation waits
    time.sleep(0.7)
    t1 = time.time()
    assert small.get("/runtimes").status_code == 200
    # not held behind the installation, which waits about a second for the first submission
    assert time.time() - t1 < 0.8
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in res), [r.text for r in res]
    order = [tag for tag, _ in sorted(events, key=lambda e: e[1])]
    assert order == ["first", "install", "after"], order
    done = dict(events)
    assert done["install"] - t0 >= 0.95  # it waited for the running submission
    assert done["after"] - done["install"] >= 0.95  # the later one started after it
    small.delete(f"/runtimes/{small.runtimes()['Late']}")


STUBBORN = r"""
#include <signal.h>
#include <unistd.h>
int main(void)
{
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGABRT, SIG_IGN);
    if (fork() == 0)
        for (;;)
            pause();
    for (;;)
        pause();
}
"""


def test_client_abort_kills_the_program(small):
    c = small.runtimes()["C"]
    helper = small.helper_pid()
    with pytest.raises(requests.exceptions.Timeout):
        # compile takes longer than 20 ms: abort during the compile
        small.execute(c, STUBBORN, timeout=0.02)
    # and once more, aborted while the program itself pauses
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(small.url + "/execute", json={"runtime_id": c, "source_code": STUBBORN},
                      timeout=(1, 1.0))
    deadline = time.time() + 5
    while descendants(helper) and time.time() < deadline:
        time.sleep(0.05)
    assert descendants(helper) == []
    assert wait_no_residue() == ([], [], [])
    assert "aborted by the client" in small.log_text()
    # the server keeps serving
    assert small.execute(small.runtimes()["Bash"], "echo alive").json()["run"]["stdout"] == "alive\n"


def test_abort_while_waiting_in_queue(small):
    bash = small.runtimes()["Bash"]
    threads, res = in_threads([lambda: small.execute(bash, "sleep 1")] * 2)
    time.sleep(0.2)
    with pytest.raises(requests.exceptions.Timeout):
        small.execute(bash, "echo never", timeout=0.2)
    for t in threads:
        t.join()
    assert "echo never" not in small.log_text()


def test_sigterm_stops_gracefully_with_runs_in_flight():
    # no time to finish: what runs is killed at once (test_shutdown.py covers the deadline)
    s = Server(SHUTDOWN_TIMEOUT=0).start()
    bash = s.runtimes()["Bash"]
    threads, res = in_threads([lambda: s.execute(bash, "trap '' TERM; sleep 100")] * 2)
    time.sleep(0.5)
    t0 = time.time()
    assert s.stop(signal.SIGTERM) == 0
    assert time.time() - t0 < 5
    for t in threads:
        t.join()
    assert wait_no_residue() == ([], [], [])
