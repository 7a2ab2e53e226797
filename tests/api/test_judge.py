"""Judge mode (SPEC §8) through the real server: one compile, many tests, a verdict for each
from real programs, the built-in checkers on cases that tell them apart, a custom checker, an
interactor, and the request's validation."""
import hashlib
import os

import pytest
import requests

from conftest import Server, zip_b64

PY = "Python 3"


def judge(server, runtime, source, tests, query="", **extra):
    rid = server.runtimes()[runtime] if isinstance(runtime, str) else runtime
    body = {"runtime_id": rid, "source_code": source, "tests": tests}
    body.update(extra)
    r = server.post("/execute" + query, body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def verdicts(answer):
    return [t["verdict"] for t in answer["tests"]]


def bad(server, body, message):
    r = server.post("/execute", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"], r.text


# ---- verdicts --------------------------------------------------------------------------------

def test_every_run_verdict_from_real_programs(server):
    src = (
        "import os, signal, sys\n"
        "w = input().split()\n"
        "if w[0] == 'sum': print(int(w[1]) + int(w[2]))\n"
        "elif w[0] == 'exit': sys.exit(int(w[1]))\n"
        "elif w[0] == 'kill': os.kill(os.getpid(), signal.SIGABRT)\n"
        "elif w[0] == 'loop':\n"
        "    while True: pass\n"
        "elif w[0] == 'eat':\n"
        "    x = bytearray(400 << 20)\n"
        "    for i in range(0, len(x), 4096): x[i] = 1\n"
    )
    a = judge(server, PY, src, [
        {"input": "sum 1 2", "expected_output": "3"},
        {"input": "sum 1 2", "expected_output": "4"},
        {"input": "loop", "expected_output": ""},
        {"input": "eat", "expected_output": ""},
        {"input": "exit 3", "expected_output": ""},
        {"input": "kill", "expected_output": ""},
        {"input": "exit 0"},
    ], run_limits={"cpu_time": 1, "wall_time": 3, "memory": 128000})
    assert verdicts(a) == ["AC", "WA", "TLE", "MLE", "RE", "SG", "AC"]
    assert a["verdict"] == "WA"
    assert a["run"] is None
    # each test carries its full StageResult
    assert a["tests"][0]["run"]["stdout"] == "3\n"
    assert a["tests"][4]["run"]["exit_code"] == 3
    assert a["tests"][5]["run"]["exit_signal"] == 6
    assert a["tests"][2]["run"]["exit_status"] == "TO"
    assert a["tests"][3]["run"]["memory_limit_exceeded"] is True
    assert "line 1" in a["tests"][1]["checker_message"]


def test_output_limit_verdict():
    s = Server(MAX_OUTPUT_SIZE=1000).start()
    try:
        a = judge(s, PY, "print('x' * 5000)\n", [{"input": "", "expected_output": "x"},
                                                   {"input": ""}])
        assert verdicts(a) == ["OLE", "OLE"]
        assert a["tests"][0]["run"]["stdout_truncated"] is True
        # The answer keeps at most 8 x MAX_OUTPUT_SIZE of outputs in all: 20 tests of 900
        # bytes are each judged on their whole output, the first 8 keep it in the answer.
        line = "y" * 899
        a = judge(s, PY, "print('y' * 899)\n", [{"input": "", "expected_output": line}] * 20)
        assert verdicts(a) == ["AC"] * 20
        kept = [t["run"]["stdout"] == line + "\n" for t in a["tests"]]
        assert kept == [True] * 8 + [False] * 12
        assert all(t["run"]["stdout"] == "" and t["run"]["stdout_truncated"]
                   for t in a["tests"][8:])
    finally:
        assert s.stop() == 0, s.log_text()


def test_stop_on_first_failure(server):
    src = "print(int(input()) * 2)\n"
    tests = [{"input": "1", "expected_output": "2"}, {"input": "2", "expected_output": "5"},
             {"input": "3", "expected_output": "6"}]
    a = judge(server, PY, src, tests)
    assert verdicts(a) == ["AC", "WA", "AC"] and a["verdict"] == "WA"
    a = judge(server, PY, src, tests, stop_on_first_failure=True)
    assert verdicts(a) == ["AC", "WA", "SKIPPED"] and a["verdict"] == "WA"
    assert a["tests"][2]["run"] is None
    a = judge(server, PY, src, tests[:1] + tests[2:], stop_on_first_failure=True)
    assert verdicts(a) == ["AC", "AC"] and a["verdict"] == "AC"


def test_compiled_once_and_each_test_fresh(server):
    # The compile stage writes a random id into the box; every test must see the same id (one
    # compile), and what a test writes in /box or /tmp, or changes, must not reach the next.
    rid = server.add_host_runtime(
        "Judge fresh", "python3 main.py", "main.py",
        compile_script="cat /proc/sys/kernel/random/uuid > build-id && mkdir -p data && "
                       "echo original > data/f")
    src = ("import os\n"
           "seen = [os.path.exists('/box/mark'), os.path.exists('/tmp/mark'),\n"
           "        open('/box/data/f').read().strip(), os.path.exists('/box/main.py')]\n"
           "print(open('/box/build-id').read().strip(), *seen)\n"
           "open('/box/mark', 'w').write('x'); open('/tmp/mark', 'w').write('x')\n"
           "open('/box/data/f', 'w').write('changed'); os.unlink('/box/main.py')\n")
    a = judge(server, rid, src, [{"input": ""}] * 4)
    assert verdicts(a) == ["AC"] * 4
    outs = [t["run"]["stdout"].split() for t in a["tests"]]
    ids = {o[0] for o in outs}
    assert len(ids) == 1 and len(outs[0][0]) == 36
    assert all(o[1:] == ["False", "False", "original", "True"] for o in outs), outs
    assert a["compile"]["exit_status"] is None


def test_compile_error_skips_every_test(server):
    a = judge(server, "C", "int main( {", [{"input": "", "expected_output": ""}] * 2)
    assert a["compile"]["exit_status"] == "RE"
    assert verdicts(a) == ["SKIPPED", "SKIPPED"]
    assert a["verdict"] == "SKIPPED"
    assert all(t["run"] is None for t in a["tests"])


def test_project_with_tests(server):
    rid = server.add_host_runtime("Judge project", "./prog", "main.c",
                                  compile_script="gcc -O2 -o prog main.c util.c")
    files = {"main.c": "#include <stdio.h>\nint twice(int);\nint main(void){int x;"
                       "scanf(\"%d\",&x);printf(\"%d\\n\",twice(x));return 0;}\n",
             "util.c": "int twice(int x){return 2*x;}\n"}
    a = judge(server, rid, zip_b64(files), [{"input": "21", "expected_output": "42"},
                                            {"input": "5", "expected_output": "10"}],
              query="?is_project=true")
    assert verdicts(a) == ["AC", "AC"] and a["verdict"] == "AC"
    assert a["extract"]["exit_status"] is None


# ---- checkers --------------------------------------------------------------------------------

@pytest.mark.parametrize("output,expected,accepted_by", [
    ("1 2\n", "1\n2\n", {"tokens", "float"}),
    ("a  \nb\n\n\n", "a\nb\n", {"lines", "tokens", "float"}),
    ("a b\n", "a b\n", {"lines", "tokens", "exact", "float"}),
    ("1.0000001\n", "1\n", {"float"}),
    ("a  b\n", "a b\n", {"tokens", "float"}),
    ("x\n", "y\n", set()),
])
def test_builtin_checkers_tell_cases_apart(server, output, expected, accepted_by):
    src = "import sys\nsys.stdout.write(%r)\n" % output
    for name in ["exact", "lines", "tokens", "float"]:
        checker = {"float": 1e-6} if name == "float" else name
        a = judge(server, PY, src, [{"input": "", "expected_output": expected}], checker=checker)
        want = "AC" if name in accepted_by else "WA"
        assert a["verdict"] == want, (name, a["tests"][0])


def test_default_checker_is_lines(server):
    a = judge(server, PY, "print('a  ')\nprint()\n", [{"input": "", "expected_output": "a"}])
    assert a["verdict"] == "AC"
    a = judge(server, PY, "print(' a')\n", [{"input": "", "expected_output": "a"}])
    assert a["verdict"] == "WA"


SUM_CHECKER = r"""
import sys
a, b = map(int, open('input').read().split())
exp = open('expected_output').read().split()
out = open('output').read()
if out != out.strip() + '\n':
    print('presentation: extra blanks'); sys.exit(2)
try:
    v = int(out.strip())
except ValueError:
    print('not a number'); sys.exit(1)
if v != a + b or [str(v)] != exp:
    print('expected %d, got %d' % (a + b, v)); sys.exit(1)
print('ok %d' % v)
"""


def test_custom_checker(server):
    src = ("a, b = map(int, input().split())\n"
           "if a == 5: print(' %d ' % (a + b))\n"
           "elif a == 6: print(a - b)\n"
           "else: print(a + b)\n")
    a = judge(server, PY, src, [
        {"input": "1 2", "expected_output": "3"},
        {"input": "6 2", "expected_output": "8"},
        {"input": "5 2", "expected_output": "7"},
    ], checker={"runtime_id": server.runtimes()[PY], "source_code": SUM_CHECKER})
    assert verdicts(a) == ["AC", "WA", "PE"]
    assert [t.get("checker_message") for t in a["tests"]] == [
        "ok 3", "expected 8, got 4", "presentation: extra blanks"]
    assert a["verdict"] == "WA"
    assert a["checker"]["compile"] is None  # Python: nothing to compile


def test_custom_checker_failure_is_CF(server):
    crash = "import sys\nprint('cannot judge this')\nsys.exit(3)\n"
    a = judge(server, PY, "print(1)\n", [{"input": "", "expected_output": "1"}],
              checker={"runtime_id": server.runtimes()[PY], "source_code": crash})
    assert verdicts(a) == ["CF"]
    assert a["tests"][0]["checker_message"] == "cannot judge this"
    # a checker in C that does not compile: every test that ran is a checker failure
    a = judge(server, PY, "print(1)\n", [{"input": "", "expected_output": "1"}],
              checker={"runtime_id": server.runtimes()["C"], "source_code": "int main( {"})
    assert verdicts(a) == ["CF"]
    assert a["checker"]["compile"]["exit_status"] == "RE"


def test_compiled_checker_in_c(server):
    checker = r"""
#include <stdio.h>
int main(void) {
    long e, o;
    FILE *fe = fopen("expected_output", "r"), *fo = fopen("output", "r");
    if (!fe || !fo || fscanf(fe, "%ld", &e) != 1) return 3;
    if (fscanf(fo, "%ld", &o) != 1) { puts("no number"); return 1; }
    if (o % e != 0) { printf("%ld is not a multiple of %ld\n", o, e); return 1; }
    puts("multiple");
    return 0;
}
"""
    a = judge(server, PY, "print(int(input()) * 3)\n",
              [{"input": "4", "expected_output": "6"}, {"input": "5", "expected_output": "4"}],
              checker={"runtime_id": server.runtimes()["C"], "source_code": checker})
    assert verdicts(a) == ["AC", "WA"]
    assert a["tests"][1]["checker_message"] == "15 is not a multiple of 4"
    assert a["checker"]["compile"]["exit_status"] is None
    # the same checker again: its compile comes from the compile cache
    b = judge(server, PY, "print(int(input()) * 6)\n", [{"input": "4", "expected_output": "6"}],
              checker={"runtime_id": server.runtimes()["C"], "source_code": checker})
    assert verdicts(b) == ["AC"]
    assert b["checker"]["compile"]["cached"] is True
    assert a["checker"]["compile"]["cached"] in (True, False)


def test_judged_program_compile_is_cached(server):
    src = "#include <stdio.h>\nint main(void){int x;scanf(\"%d\",&x);printf(\"%d\\n\",x+1);}\n"
    src += "/* %s */\n" % os.urandom(8).hex()
    tests = [{"input": "1", "expected_output": "2"}, {"input": "41", "expected_output": "42"}]
    a = judge(server, "C", src, tests)
    b = judge(server, "C", src, tests)
    assert a["compile"]["cached"] is False and b["compile"]["cached"] is True
    assert verdicts(a) == verdicts(b) == ["AC", "AC"]


# ---- interactor ------------------------------------------------------------------------------

INTERACTOR = r"""
import sys
secret = int(open('input').read())
limit = 20
for q in range(limit):
    line = sys.stdin.readline()
    if not line:
        print('the program stopped after %d guesses' % q, file=sys.stderr); sys.exit(1)
    g = int(line)
    if g == secret:
        print('=', flush=True)
        print('found in %d guesses' % (q + 1), file=sys.stderr); sys.exit(0)
    print('<' if secret < g else '>', flush=True)
print('no guesses left', file=sys.stderr); sys.exit(1)
"""

BINARY_SEARCH = r"""
import sys
lo, hi = 1, 1000000
while True:
    mid = (lo + hi) // 2
    print(mid, flush=True)
    r = sys.stdin.readline().strip()
    if r == '=': break
    if r == '<': hi = mid - 1
    else: lo = mid + 1
"""

LINEAR = r"""
import sys
g = 1
while True:
    print(g, flush=True)
    if sys.stdin.readline().strip() == '=': break
    g += 1
"""


def interactor(server):
    return {"runtime_id": server.runtimes()[PY], "source_code": INTERACTOR}


def test_interactor_guess_the_number(server):
    tests = [{"input": "1"}, {"input": "777777"}, {"input": "1000000"}]
    a = judge(server, PY, BINARY_SEARCH, tests, interactor=interactor(server))
    assert verdicts(a) == ["AC", "AC", "AC"], a
    assert a["tests"][1]["checker_message"].startswith("found in ")
    # a strategy the interactor rejects: linear search runs out of guesses
    a = judge(server, PY, LINEAR, tests, interactor=interactor(server))
    assert verdicts(a) == ["AC", "WA", "WA"], a
    assert a["tests"][1]["checker_message"] == "no guesses left"


def test_interactor_program_that_breaks_the_protocol(server):
    # exits at once: the interactor sees the end of its input and says WA, no deadlock
    a = judge(server, PY, "pass\n", [{"input": "5"}], interactor=interactor(server),
              run_limits={"wall_time": 20})
    assert verdicts(a) == ["WA"]
    assert a["tests"][0]["checker_message"] == "the program stopped after 0 guesses"
    assert a["tests"][0]["run"]["wall_time"] < 10
    # never reads nor writes: both wait; the program's time limit ends it
    a = judge(server, PY, "import time\ntime.sleep(100)\n", [{"input": "5"}],
              interactor=interactor(server), run_limits={"wall_time": 1})
    assert verdicts(a) == ["TLE"]
    # writes garbage: the interactor's parse fails, Python exits 1, which is WA
    a = judge(server, PY, "print('hello', flush=True)\nimport sys\nsys.stdin.readline()\n",
              [{"input": "5"}], interactor=interactor(server))
    assert verdicts(a) == ["WA"]
    # an interactor that exits with another code is a checker failure, whatever the program did
    broken = {"runtime_id": server.runtimes()[PY],
              "source_code": "import sys\nprint('broken', file=sys.stderr)\nsys.exit(3)\n"}
    a = judge(server, PY, BINARY_SEARCH, [{"input": "5"}], interactor=broken)
    assert verdicts(a) == ["CF"]
    assert a["tests"][0]["checker_message"] == "broken"
    assert a["interactor"]["compile"] is None


# ---- file store ------------------------------------------------------------------------------

def upload(server, data):
    r = requests.post(server.url + "/files", data=data, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == hashlib.sha256(data).hexdigest()
    return r.json()["id"]


def test_tests_from_stored_files_of_several_mb():
    # A server whose MAX_OUTPUT_SIZE lets the program echo the whole input back.
    s = Server(MAX_OUTPUT_SIZE=16 << 20).start()
    try:
        lines = b"".join(b"%d\n" % (i * 7919 % 1000003) for i in range(700000))
        assert len(lines) > 4 << 20
        inp = upload(s, lines)
        assert upload(s, lines) == inp  # idempotent
        wrong = upload(s, lines[:-2] + b"0\n")
        src = "import sys\nsys.stdout.write(sys.stdin.read())\n"
        a = judge(s, PY, src, [{"input_file": inp, "expected_output_file": inp},
                               {"input_file": inp, "expected_output_file": wrong},
                               {"input_file": inp, "expected_output": "1"},
                               {"input": "1", "expected_output_file": inp}],
                  checker="exact")
        assert verdicts(a) == ["AC", "WA", "WA", "WA"], [t.get("checker_message") for t in a["tests"]]
        assert a["tests"][0]["run"]["stdout"].encode() == lines
        assert "byte %d differs" % (len(lines) - 2) == a["tests"][1]["checker_message"]
    finally:
        assert s.stop() == 0, s.log_text()


def test_input_file_on_plain_execute(server):
    data = b"hello from the store\n" * 1000
    fid = upload(server, data)
    r = server.post("/execute", {"runtime_id": server.runtimes()[PY],
                                 "source_code": "import sys\nsys.stdout.write(sys.stdin.read())",
                                 "input_file": fid})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"].encode() == data


# ---- validation ------------------------------------------------------------------------------

def test_bad_judge_requests(server):
    py = server.runtimes()[PY]
    base = {"runtime_id": py, "source_code": "print(1)"}
    unknown = "0" * 64
    cases = [
        ({"tests": {"input": "1"}}, "tests must be an array"),
        ({"tests": []}, "tests must not be empty"),
        ({"tests": ["1"]}, "tests[0] must be an object"),
        ({"tests": [{"input": "1"}, 5]}, "tests[1] must be an object"),
        ({"tests": [{"input": 1}]}, "tests[0].input must be a string"),
        ({"tests": [{"input": "1", "input_file": unknown}]},
         "tests[0]: input and input_file are mutually exclusive"),
        ({"tests": [{"expected_output": "1", "expected_output_file": unknown}]},
         "tests[0]: expected_output and expected_output_file are mutually exclusive"),
        ({"tests": [{"input": "1"}], "checker": "bytes"}, "Unknown checker: \"bytes\""),
        ({"tests": [{"input": "1"}], "checker": 3}, "Unknown checker"),
        ({"tests": [{"input": "1"}], "checker": {"float": -1}}, "checker.float must be a non-negative"),
        ({"tests": [{"input": "1"}], "checker": {"float": "x"}}, "checker.float must be a non-negative"),
        ({"tests": [{"input": "1"}], "checker": {"runtime_id": "x", "source_code": ""}},
         "checker.runtime_id must be an integer"),
        ({"tests": [{"input": "1"}], "checker": {"runtime_id": 999999, "source_code": "x"}},
         "Runtime with id: 999999 does not exist"),
        ({"tests": [{"input": "1"}], "interactor": {"runtime_id": py}},
         "interactor.source_code is required"),
        ({"tests": [{"input": "1"}], "interactor": {"runtime_id": py, "source_code": "x"},
          "checker": "exact"}, "checker and interactor are mutually exclusive"),
        ({"tests": [{"input": "1"}], "stop_on_first_failure": "yes"},
         "stop_on_first_failure must be a boolean"),
        ({"tests": [{"input": "1"}], "input": "2"}, "input and tests are mutually exclusive"),
        ({"checker": "exact"}, "checker needs tests"),
        ({"tests": [{"input_file": unknown}]}, f"File with id: {unknown} does not exist"),
        ({"tests": [{"expected_output_file": "nothex"}]}, "File with id: nothex does not exist"),
        ({"input_file": unknown}, f"File with id: {unknown} does not exist"),
        ({"input_file": unknown, "input": "x"}, "input and input_file are mutually exclusive"),
    ]
    for extra, message in cases:
        bad(server, {**base, **extra}, message)


def test_max_tests():
    s = Server(MAX_TESTS=3).start()
    try:
        py = s.runtimes()[PY]
        body = {"runtime_id": py, "source_code": "print(1)", "tests": [{"input": ""}] * 4}
        r = s.post("/execute", body)
        assert r.status_code == 400
        assert r.json()["message"] == "Too many tests: 4 (at most 3, MAX_TESTS)"
        body["tests"] = body["tests"][:3]
        assert s.post("/execute", body).status_code == 200
    finally:
        assert s.stop() == 0, s.log_text()
