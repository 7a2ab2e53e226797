"""`envicutor catalog check DIR`: validation names the file and the field; a scratch server
runs every sample and the exit status tells a mismatch."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import BIN, CATALOG


def make_dir(tmp_path, changes=None):
    d = tmp_path / "catalog"
    d.mkdir()
    for f in ("bash.json", "python3.json"):
        shutil.copy(os.path.join(CATALOG, f), d / f)
    for f, change in (changes or {}).items():
        e = json.loads((d / f).read_text())
        change(e)
        (d / f).write_text(json.dumps(e))
    return d


def check(d, **env):
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run([BIN, "catalog", "check", str(d)], env=env, capture_output=True,
                          text=True, timeout=900)


def test_a_good_catalog_passes(tmp_path):
    r = check(make_dir(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l.split() for l in r.stdout.splitlines()]
    assert ["Bash", "bash.json", "ok"] == rows[1][:3]
    assert ["Python", "3", "python3.json", "ok"] == rows[2][:4]


def test_a_wrong_expected_output_fails_naming_the_entry(tmp_path):
    def wrong(e):
        e["sample"]["expected_output"] = "not what it prints\n"
    r = check(make_dir(tmp_path, {"python3.json": wrong}))
    assert r.returncode == 1
    assert "wrong output" in r.stdout and "python3.json: expected not what it prints" in r.stdout
    assert "bash.json              ok" in r.stdout


def test_a_malformed_entry_names_file_and_field(tmp_path):
    def bad_limit(e):
        e["run_limits"] = {"memory": "a lot"}

    def no_sample_input(e):
        del e["sample"]["input"]
    r = check(make_dir(tmp_path, {"bash.json": bad_limit, "python3.json": no_sample_input}))
    assert r.returncode == 1
    assert "bash.json: field 'run_limits.memory'" in r.stderr
    assert "python3.json: field 'sample.input': missing" in r.stderr
    assert r.stdout == ""  # nothing installed, no server started


def test_an_entry_limit_the_environment_lowers_is_not_installed(tmp_path):
    # the scratch server raises a limit to an entry's own only where the environment says
    # nothing about it
    def many_files(e):
        e["run_limits"] = {"max_open_files": 256}
    d = make_dir(tmp_path, {"python3.json": many_files})
    r = check(d, RUN_MAX_OPEN_FILES="128")
    assert r.returncode == 1
    assert "python3.json: installation failed" in r.stdout and "bash.json              ok" in r.stdout
    r = check(d)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_script_longer_than_the_api_takes_is_refused(tmp_path):
    # POST /runtimes takes scripts of up to 16384 bytes; the catalog may not install more
    def long_script(e):
        e["compile_script"] = "true\n" + "#" * (16384 - 5 + 1)
    r = check(make_dir(tmp_path, {"python3.json": long_script}))
    assert r.returncode == 1
    assert "python3.json: field 'compile_script': longer than 16384 bytes" in r.stderr
    assert r.stdout == ""


def test_the_project_catalog_passes(tmp_path):
    """Every entry of runtimes/catalog whose toolchain is here (with ENVICUTOR_ALL_LANGUAGES=1:
    every entry) gets a row that says ok."""
    d = tmp_path / "catalog"
    d.mkdir()
    files = []
    for f in sorted(os.listdir(CATALOG)):
        e = json.loads(open(os.path.join(CATALOG, f)).read())
        if os.environ.get("ENVICUTOR_ALL_LANGUAGES") == "1" or \
                all(shutil.which(c, path="/usr/local/bin:/usr/bin:/bin") for c in e["requires"]):
            shutil.copy(os.path.join(CATALOG, f), d / f)
            files.append(f)
    if not files:
        pytest.fail("no catalog entry has its toolchain here")
    # R's entry needs 256 descriptors (runtimes/catalog/r.json), more than the default: the
    # scratch server gets them unasked
    r = check(d)
    assert r.returncode == 0, r.stdout + r.stderr
    status = {}
    for line in r.stdout.splitlines()[1:]:
        words = line.split()
        for i, w in enumerate(words[:-1]):
            if w.endswith(".json"):
                status[w] = words[i + 1]
    assert status == {f: "ok" for f in files}, r.stdout
