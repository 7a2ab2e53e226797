"""Every endpoint, status code and message of SPEC §4, through HTTP to a real server."""
import shutil
import base64
import json

import pytest
import requests

from conftest import catalog_entries, zip_b64


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200 and r.text == "Up and running"


def test_catalog_is_installed_in_id_order(server):
    r = server.get("/runtimes")
    assert r.status_code == 200
    items = r.json()
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)
    names = {i["name"] for i in items}
    # the default set of docs/server.md, every entry installed: scripts/install-deps installs
    # every toolchain it needs (the other languages: test_languages.py)
    assert CATALOG_NAMES <= {e["name"] for e in catalog_entries()}
    assert CATALOG_NAMES <= names


# The server installs a catalog entry at its first start when the commands it requires are
# found in these directories (pipeline/catalog.c); the same search tells an absent toolchain from a failed install.
CATALOG_NAMES = {"Bash", "C", "C++", "Java", "Node.js", "Python 3"}
CATALOG_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.mark.parametrize("entry", [e for e in catalog_entries() if e["name"] in CATALOG_NAMES],
                         ids=lambda e: e["name"])
def test_catalog_sample(server, entry):
    missing = [c for c in entry["requires"] if not shutil.which(c, path=CATALOG_PATH)]
    assert not missing, f"{entry['name']}: {missing} not on this host (scripts/install-deps)"
    ids = server.runtimes()
    assert entry["name"] in ids, \
        f"{entry['name']}: its toolchain is here, but it was not installed: {server.log_text()}"
    r = server.execute(ids[entry["name"]], entry["sample"]["source_code"], entry["sample"]["input"])
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["extract"] is None
    assert (j["compile"] is None) == (entry["compile_script"] == "")
    assert j["run"]["exit_status"] is None, j
    assert j["run"]["stdout"] == entry["sample"]["expected_output"]


# ---- POST /runtimes -----------------------------------------------------------------------

def rt_body(**kw):
    body = {"name": "X", "provider": "host", "nix_shell": "", "compile_script": "",
            "run_script": "cat main.txt", "source_file_name": "main.txt"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("body,message", [
    (rt_body(name=""), "Name can't be empty"),
    (rt_body(run_script=""), "Run command can't be empty"),
    (rt_body(source_file_name=""), "Source file name can't be empty"),
    (rt_body(source_file_name="."), "Invalid source file name"),
    (rt_body(source_file_name=".."), "Invalid source file name"),
    (rt_body(source_file_name="a/b.py"), "Invalid source file name"),
    (rt_body(source_file_name="/etc/passwd"), "Invalid source file name"),
    (rt_body(source_file_name="a\u0000b"), "Invalid source file name"),
    (rt_body(source_file_name="x" * 256), "Invalid source file name"),
    (rt_body(provider=None, nix_shell=""), "Nix shell can't be empty"),
    (rt_body(name="", provider=None), "Name can't be empty"),
])
def test_add_runtime_validation(server, body, message):
    r = server.post("/runtimes", body)
    assert r.status_code == 400
    assert r.json() == {"message": message}


@pytest.mark.skipif(shutil.which("nix-shell") is not None,
                    reason="Nix is installed (test_nix.py covers a server without it)")
def test_nix_runtime_without_nix(server):
    r = server.post("/runtimes", rt_body(provider=None, nix_shell="{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {}"))
    assert r.status_code == 400
    assert "Nix is not available" in r.json()["message"]


@pytest.mark.parametrize("body", [
    "not json", "[1, 2]", '{"name": 5, "provider": "host"}', '{"name": "a", "env": [1]}',
    '{"name": "a", "provider": "podman", "run_script": "x", "source_file_name": "y"}',
    '{"name": "a", "provider": "host", "run_script": "x", "source_file_name": "y", "env": {"1A": "v"}}',
    '{"name": "a", "provider": "host", "run_script": "x", "source_file_name": "y", "env": {"A": 1}}',
])
def test_add_runtime_malformed(server, body):
    r = requests.post(server.url + "/runtimes", data=body,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"]


def test_runtime_lifecycle_and_duplicate_name(server):
    rid = server.add_host_runtime("Lifecycle", "cat main.txt", "main.txt")
    r = server.post("/runtimes", rt_body(name="Lifecycle"))
    assert r.status_code == 400 and r.json() == {"message": "A runtime with this name already exists"}
    j = server.execute(rid, "hello").json()
    assert j["run"]["stdout"] == "hello\n"
    assert server.delete(f"/runtimes/{rid}").status_code == 200
    assert "Lifecycle" not in server.runtimes()
    r = server.delete(f"/runtimes/{rid}")
    assert r.status_code == 404 and r.json() == {"message": "Could not find the specified runtime"}
    r = server.execute(rid, "x")
    assert r.status_code == 400 and r.json() == {"message": f"Runtime with id: {rid} does not exist"}


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "1.5", "99999999999999999999999"])
def test_delete_non_integer_id(server, bad):
    r = server.delete("/runtimes/" + bad)
    assert r.status_code == 400
    assert "runtime id" in r.json()["message"]


def test_setup_failure_keeps_nothing(server):
    r = server.post("/runtimes", rt_body(name="Broken", run_script="if then fi ((("))
    assert r.status_code == 400
    j = r.json()
    assert set(j) >= {"stdout", "stderr"} and "syntax" in j["stderr"]
    assert "Broken" not in server.runtimes()


def test_env_reaches_program_exactly(server):
    env = {"MULTI": "line one\nline two", "SPACES": "  a b  ", "EQ": "k=v=w", "PATH": "/usr/bin:/bin"}
    rid = server.add_host_runtime("EnvCheck", "python3 main.py", "main.py", env=env)
    src = "import os, json\nprint(json.dumps({k: os.environ.get(k) for k in %r}))" % list(env)
    j = server.execute(rid, src).json()
    assert json.loads(j["run"]["stdout"]) == env
    server.delete(f"/runtimes/{rid}")


# ---- POST /execute ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids(server):
    return server.runtimes()


def test_compile_error_stops_with_run_null(server, ids):
    j = server.execute(ids["C"], "int main(void) { return x; }").json()
    assert j["compile"]["exit_status"] == "RE" and "error" in j["compile"]["stderr"]
    assert j["run"] is None


def test_runtime_error_and_signal(server, ids):
    j = server.execute(ids["Python 3"], "import sys\nprint('out')\nsys.exit(3)").json()
    assert j["run"]["exit_status"] == "RE" and j["run"]["exit_code"] == 3
    assert j["run"]["stdout"] == "out\n"
    j = server.execute(ids["Bash"], "kill -SEGV $$").json()
    assert j["run"]["exit_status"] == "SG" and j["run"]["exit_signal"] == 11


def test_input_and_source_get_a_newline(server, ids):
    j = server.execute(ids["Bash"], "cat; od -c main.sh | tail -2 | head -1", "abc").json()
    assert j["run"]["stdout"].startswith("abc\n")
    assert "\\n" in j["run"]["stdout"]


def test_time_limit_and_memory_limit(server, ids):
    j = server.execute(ids["Python 3"], "while True: pass",
                       run_limits={"cpu_time": 0.3, "extra_time": 0}).json()
    assert j["run"]["exit_status"] == "TO"
    assert 0.3 <= j["run"]["cpu_time"] < 1.5
    j = server.execute(ids["Bash"], "sleep 5", run_limits={"wall_time": 0.3}).json()
    assert j["run"]["exit_status"] == "TO" and j["run"]["wall_time"] < 2
    j = server.execute(ids["Python 3"], "a = bytearray(200 * 1024 * 1024)\nprint(len(a))",
                       run_limits={"memory": 50000}).json()
    assert j["run"]["exit_status"] == "SG" and j["run"]["exit_signal"] == 9
    assert j["run"]["memory_limit_exceeded"] is True


def test_limits_under_maximum_are_applied(server, ids):
    j = server.execute(ids["Bash"], "ulimit -n; ulimit -f",
                       run_limits={"max_open_files": 24, "max_file_size": 100}).json()
    assert j["run"]["stdout"].split() == ["24", "100"]
    j = server.execute(ids["Bash"], "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait",
                       run_limits={"max_number_of_processes": 3}).json()
    assert "fork" in j["run"]["stderr"] or "resource" in j["run"]["stderr"].lower()


@pytest.mark.parametrize("stage,limit,value,message", [
    ("run", "wall_time", 61, "Invalid run limits: wall_time can't exceed 60 seconds"),
    ("run", "cpu_time", 30.5, "Invalid run limits: cpu_time can't exceed 30 seconds"),
    ("run", "extra_time", 6, "Invalid run limits: extra_time can't exceed 5 seconds"),
    ("run", "memory", 1000001, "Invalid run limits: memory can't exceed 1000000 kilobytes"),
    ("run", "max_open_files", 65, "Invalid run limits: max_open_files can't exceed 64"),
    ("run", "max_file_size", 100001, "Invalid run limits: max_file_size can't exceed 100000 kilobytes"),
    ("run", "max_number_of_processes", 65, "Invalid run limits: max_number_of_processes can't exceed 64"),
    ("compile", "wall_time", 100, "Invalid compile limits: wall_time can't exceed 60 seconds"),
    ("compile", "memory", 1000001, "Invalid compile limits: memory can't exceed 1000000 kilobytes"),
    ("compile", "max_open_files", 513, "Invalid compile limits: max_open_files can't exceed 512"),
    ("compile", "max_number_of_processes", 513, "Invalid compile limits: max_number_of_processes can't exceed 512"),
    ("run", "wall_time", -1, "Invalid run limits: wall_time must be a number of seconds from 0.000001 to 60"),
    ("run", "memory", 0, "Invalid run limits: memory must be a whole number of kilobytes from 1 to 1000000"),
    ("run", "extra_time", -0.5, "Invalid run limits: extra_time must be a number of seconds from 0 to 5"),
    ("run", "memory", 1.5, "Invalid run limits: memory must be a whole number of kilobytes from 1 to 1000000"),
    ("run", "memory", "big", "Invalid run limits: memory must be a whole number of kilobytes from 1 to 1000000"),
    ("compile", "colour", 1, "Invalid compile limits: unknown limit colour"),
])
def test_limit_validation(server, ids, stage, limit, value, message):
    r = server.execute(ids["Bash"], "true", **{stage + "_limits": {limit: value}})
    assert r.status_code == 400
    assert r.json() == {"message": message}


def test_limits_at_maximum_are_accepted(server, ids):
    r = server.execute(ids["Bash"], "echo ok", run_limits={"wall_time": 60, "memory": 1000000,
                                                           "max_open_files": 64, "extra_time": 0})
    assert r.status_code == 200 and r.json()["run"]["stdout"] == "ok\n"


@pytest.mark.parametrize("body,message", [
    ('{"source_code": "x"}', "runtime_id is required"),
    ('{"runtime_id": "1", "source_code": "x"}', "runtime_id must be an integer"),
    ('{"runtime_id": 1.5, "source_code": "x"}', "runtime_id must be an integer"),
    ('{"runtime_id": 1}', "source_code is required"),
    ('{"runtime_id": 1, "source_code": 7}', "source_code must be a string"),
    ('{"runtime_id": 1, "source_code": "x", "input": []}', "input must be a string"),
    ('{"runtime_id": 1, "source_code": "x", "run_limits": 3}', "run_limits must be an object"),
    ('"just a string"', "The request body must be a JSON object"),
    ('{"runtime_id": 1, "source_code": "x", "runtime_id": 2}', None),
    ('{"runtime_id": 1, ', None),
    ('', None),
])
def test_execute_malformed(server, body, message):
    r = requests.post(server.url + "/execute", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    if message:
        assert r.json() == {"message": message}
    else:
        assert r.json()["message"].startswith("Invalid JSON")


def test_unknown_runtime(server):
    r = server.execute(987654, "x")
    assert r.status_code == 400 and r.json() == {"message": "Runtime with id: 987654 does not exist"}


def test_unknown_path_and_method(server):
    assert server.get("/nothing").status_code == 404
    assert server.delete("/execute").status_code == 405
    assert server.post("/health").status_code == 405
    assert requests.put(server.url + "/runtimes/1", timeout=10).status_code == 405


@pytest.mark.skipif(shutil.which("nix-shell") is not None,
                    reason="Nix is installed (test_nix.py covers a server without it)")
def test_update_without_nix(server):
    r = server.post("/update")
    assert r.status_code == 500
    assert set(r.json()) == {"stdout", "stderr"} and "Nix is not available" in r.json()["stderr"]


def test_non_utf8_output_is_replaced(server, ids):
    j = server.execute(ids["Bash"], r"printf 'a\xffb'").json()
    assert j["run"]["stdout"] == "a\ufffdb"


# ---- projects -----------------------------------------------------------------------------

def test_python_project(server, ids):
    src = zip_b64({"main.py": "from pkg.util import twice\nprint(twice(int(input())))\n",
                   "pkg/__init__.py": "", "pkg/util.py": "def twice(x):\n    return 2 * x\n"})
    j = server.execute(ids["Python 3"], src, "21", project=True).json()
    assert j["extract"]["exit_status"] is None
    assert j["run"]["stdout"] == "42\n"


def test_cpp_project(server, ids):
    src = zip_b64({"main.cpp": '#include <iostream>\n#include "lib/add.hpp"\nint main(){int a,b;std::cin>>a>>b;std::cout<<add(a,b)<<"\\n";}\n',
                   "lib/add.hpp": "int add(int a, int b);\n",
                   "lib/add.cpp": '#include "add.hpp"\nint add(int a, int b) { return a + b; }\n'})
    rid = server.add_host_runtime("C++ project", "./main", "main.cpp",
                                  compile_script="g++ -O1 -o main main.cpp lib/add.cpp")
    j = server.execute(rid, src, "2 40", project=True).json()
    assert j["extract"]["exit_status"] is None and j["compile"]["exit_status"] is None, j
    assert j["run"]["stdout"] == "42\n"
    # the archive itself is not left among the project's files
    j = server.execute(ids["Bash"], zip_b64({"main.sh": "ls -A /box"}), project=True).json()
    assert j["run"]["stdout"] == "main.sh\n"
    server.delete(f"/runtimes/{rid}")


def test_non_zip_archive(server, ids):
    j = server.execute(ids["Python 3"], base64.b64encode(b"this is not a zip").decode(),
                       project=True).json()
    assert j["extract"]["exit_status"] == "RE"
    assert j["compile"] is None and j["run"] is None


def test_bad_base64(server, ids):
    r = server.execute(ids["Python 3"], "not*base64!", project=True)
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid base64")


def test_isolation_between_stages_and_host(server, ids):
    j = server.execute(ids["Bash"], "id -u; ls /root 2>&1; cat /etc/shadow 2>&1; ls /runtime").json()
    out = j["run"]["stdout"].splitlines()
    assert int(out[0]) >= 60000
    assert "compile.sh" in j["run"]["stdout"] and "run.sh" in j["run"]["stdout"]
    assert "root:" not in j["run"]["stdout"]
