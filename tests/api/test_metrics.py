"""GET /metrics (SPEC §11): the Prometheus text format, parsed here by a small parser of our
own, and counters that move by exactly what known traffic makes them move."""
import os
import re

import pytest
import requests

from conftest import Server

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")


def parse(text):
    """{(name, frozenset(labels)): value} after checking every line against the format: HELP
    and TYPE once per family and before its samples, samples of declared families only, values
    that are numbers, histograms with cumulative buckets ending in +Inf equal to _count."""
    assert text.endswith("\n")
    types, helps, samples = {}, set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, line
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels = m.group(1), dict(re.findall(LABEL, m.group(2) or ""))
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in types or (family in types and types[family] == "histogram"), line
            value = float(m.group(m.lastindex))
            key = (name, frozenset(labels.items()))
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = value
    assert set(types) == helps
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == family + "_bucket":
                rest = frozenset(l for l in labels if l[0] != "le")
                le = dict(labels)["le"]
                series.setdefault(rest, []).append((float(le), v))
        assert series, family
        for rest, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (family, buckets)
            assert buckets[-1][0] == float("inf")
            assert samples[(family + "_count", rest)] == counts[-1]
            assert (family + "_sum", rest) in samples
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(server, **kw):
    r = server.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


@pytest.fixture(scope="module")
def own_server():
    s = Server(MAX_CONCURRENT_SUBMISSIONS=2).start()
    yield s
    assert s.stop() == 0, s.log_text()


def test_counts_move_exactly_with_known_traffic(own_server):
    s = own_server
    bash = s.runtimes()["Bash"]
    before = scrape(s)
    for _ in range(3):
        assert s.get("/health").status_code == 200
    for _ in range(2):
        assert s.get("/no-such-route").status_code == 404
    assert s.get("/runtimes/999999").status_code == 404
    assert s.execute(bash, "echo hi").json()["run"]["stdout"] == "hi\n"
    assert s.execute(bash, "exit 3").json()["run"]["exit_code"] == 3
    after = scrape(s)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    req = "envicutor_http_requests_total"
    assert moved(req, method="GET", route="/health", status="200") == 3
    assert moved(req, method="", route="none", status="404") == 2
    assert moved(req, method="POST", route="/execute", status="200") == 2
    assert moved(req, method="GET", route="/runtimes/{id}", status="404") == 1
    assert moved(req, method="GET", route="/metrics", status="200") == 1  # the first scrape
    # two runs; Bash has no compile stage
    res = "envicutor_stage_results_total"
    assert moved(res, stage="run", status="OK") == 1
    assert moved(res, stage="run", status="RE") == 1
    assert moved(res, stage="compile", status="OK") == 0
    assert moved("envicutor_stage_duration_seconds_count", stage="run") == 2
    assert moved("envicutor_stage_duration_seconds_bucket", stage="run", le="+Inf") == 2
    assert moved("envicutor_stage_duration_seconds_sum", stage="run") > 0
    assert moved("envicutor_box_setup_seconds_count") == 2
    assert moved("envicutor_box_failures_total") == 0
    # nothing waits or runs once every answer is in
    assert value(after, "envicutor_queue_waiting") == 0
    assert value(after, "envicutor_submissions_running") == 0
    assert value(after, "envicutor_queue_waiting_bytes", where="memory") == 0
    # defined before what increments them exists, so that dashboards see them from the start
    assert ("envicutor_compile_cache_total", frozenset({("result", "hit")})) in after
    assert ("envicutor_helper_restarts_total", frozenset()) in after


def test_verdicts_counted_per_test(own_server):
    s = own_server
    bash = s.runtimes()["Bash"]
    before = scrape(s)
    r = s.post("/execute", {"runtime_id": bash, "source_code": "read a; echo $a",
                            "tests": [{"input": "1", "expected_output": "1"},
                                      {"input": "2", "expected_output": "3"},
                                      {"input": "4", "expected_output": "4"}]})
    assert [t["verdict"] for t in r.json()["tests"]] == ["AC", "WA", "AC"], r.text
    after = scrape(s)
    v = "envicutor_verdicts_total"
    assert value(after, v, verdict="AC") - value(before, v, verdict="AC") == 2
    assert value(after, v, verdict="WA") - value(before, v, verdict="WA") == 1
    assert value(after, v, verdict="TLE") - value(before, v, verdict="TLE") == 0
    runs = "envicutor_stage_duration_seconds_count"
    assert value(after, runs, stage="run") - value(before, runs, stage="run") == 3
    # the same C program twice: one compile-cache miss, then one hit
    if "C" in s.runtimes():
        c = s.runtimes()["C"]
        src = "int main(void){return 0;} /* %s */" % os.urandom(6).hex()
        before = scrape(s)
        for _ in range(2):
            assert s.execute(c, src).json()["run"]["exit_code"] == 0
        after = scrape(s)
        cc = "envicutor_compile_cache_total"
        assert value(after, cc, result="miss") - value(before, cc, result="miss") == 1
        assert value(after, cc, result="hit") - value(before, cc, result="hit") == 1


def test_compile_stage_counted_for_c(own_server):
    s = own_server
    rts = s.runtimes()
    if "C" not in rts:
        pytest.skip("no C toolchain on this host")
    before = scrape(s)
    assert s.execute(rts["C"], "int main(void){return 0;}").status_code == 200
    assert s.execute(rts["C"], "int main(void){return x;}").status_code == 200
    after = scrape(s)
    res = "envicutor_stage_results_total"
    assert value(after, res, stage="compile", status="OK") - \
        value(before, res, stage="compile", status="OK") == 1
    assert value(after, res, stage="compile", status="RE") - \
        value(before, res, stage="compile", status="RE") == 1
    assert value(after, res, stage="run", status="OK") - \
        value(before, res, stage="run", status="OK") == 1


ADMIN, EXEC = "admin-key-metrics-1", "exec-key-metrics-1"


def test_behind_the_admin_key_when_keys_are_set():
    s = Server(ADMIN_API_KEYS=ADMIN, EXECUTE_API_KEYS=EXEC).start()
    try:
        assert s.get("/metrics").status_code == 401
        assert s.get("/metrics", headers={"Authorization": "Bearer " + EXEC}).status_code == 403
        samples = scrape(s, headers={"Authorization": "Bearer " + ADMIN})
        req = "envicutor_http_requests_total"
        assert value(samples, req, method="GET", route="/metrics", status="401") == 1
        assert value(samples, req, method="GET", route="/metrics", status="403") == 1
    finally:
        assert s.stop() == 0, s.log_text()


def test_the_parser_rejects_what_is_not_the_format():
    # the parser itself must fail on broken text, or the tests above would prove nothing
    good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
    parse(good)
    for bad in [good.replace("a_total{", "b_total{"),           # no TYPE for b_total
                good.replace('k="v"', "k=v"),                    # unquoted label value
                good.replace(" 1\n", " one\n"),                  # not a number
                good + 'a_total{k="v"} 2\n',                     # duplicate sample
                good[:-1]]:                                      # no final newline
        with pytest.raises((AssertionError, ValueError)):
            parse(bad)
