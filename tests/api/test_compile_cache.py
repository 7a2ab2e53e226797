"""The compile cache (SPEC §8) through a real server and real gcc.

The runtime's compile script prints a fresh UUID before it compiles: a compile that ran says a
new one, a cached answer repeats the UUID of the compile that made the entry. So each test
tells a hit from a miss by what the compile stage printed, not by timing."""
import os
import shutil
import tempfile

import pytest

from conftest import Server, zip_b64

NO_CATALOG = "/nonexistent"

COMPILE = ("cat /proc/sys/kernel/random/uuid; "
           "if grep -q SLOW main.c; then sleep 30; fi; "
           "if grep -q BIG main.c; then head -c 2000000 /dev/urandom > blob; fi; "
           "gcc -O0 -o main main.c")

HELLO = '#include <stdio.h>\nint main(void) { puts("%s"); return 0; }\n'


def source(text):
    return HELLO % text


@pytest.fixture
def srv():
    s = Server(ENVICUTOR_CATALOG=NO_CATALOG).start()
    yield s
    assert s.stop() == 0, s.log_text()
    shutil.rmtree(s.data_dir, ignore_errors=True)


def add_c(s, name="C-uuid"):
    return s.add_host_runtime(name, "./main", source_file_name="main.c", compile_script=COMPILE)


def run(s, rid, src, **kw):
    r = s.execute(rid, src, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def uuid_of(j):
    return j["compile"]["stdout"].splitlines()[0]


def entries(s):
    """Every entry file under the data directory's compile cache, by group (runtime directory)."""
    root = os.path.join(s.data_dir, "compile-cache")
    out = {}
    for g in sorted(os.listdir(root)):
        out[g] = sorted(os.listdir(os.path.join(root, g)))
    return out


def entry_paths(s):
    root = os.path.join(s.data_dir, "compile-cache")
    return [os.path.join(root, g, e) for g, es in entries(s).items() for e in es]


def test_second_identical_submission_is_served_from_the_cache(srv):
    rid = add_c(srv)
    first = run(srv, rid, source("hello"))
    assert first["compile"]["cached"] is False
    assert first["run"]["stdout"] == "hello\n"
    second = run(srv, rid, source("hello"))
    assert second["compile"]["cached"] is True
    # the compile did not run again: its output is the first one's, UUID included
    assert uuid_of(second) == uuid_of(first)
    for k in ("stdout", "stderr", "exit_code", "memory", "cpu_time", "wall_time", "exit_status",
              "exit_message", "stdout_truncated", "memory_limit_exceeded"):
        assert second["compile"][k] == first["compile"][k], k
    # the compiled program came back with the box's files
    assert second["run"]["stdout"] == "hello\n"
    assert second["run"]["exit_code"] == 0
    # read-only entries
    paths = entry_paths(srv)
    assert len(paths) == 1
    assert os.stat(paths[0]).st_mode & 0o777 == 0o444
    # a runtime without a compile script has nothing to cache and says nothing of it
    sh = srv.add_host_runtime("sh", "bash main.sh")
    j = run(srv, sh, "echo hi")
    assert j["compile"] is None and j["run"]["stdout"] == "hi\n"
    assert len(entry_paths(srv)) == 1


def test_each_part_of_the_key_makes_a_miss(srv):
    rid = add_c(srv)
    base = run(srv, rid, source("hello"))
    assert run(srv, rid, source("hello"))["compile"]["cached"] is True
    seen = {uuid_of(base)}

    # one byte of the source
    j = run(srv, rid, source("hellp"))
    assert j["compile"]["cached"] is False and j["run"]["stdout"] == "hellp\n"
    assert uuid_of(j) not in seen
    seen.add(uuid_of(j))

    # a compile limit
    j = run(srv, rid, source("hello"), compile_limits={"memory": 900000})
    assert j["compile"]["cached"] is False and uuid_of(j) not in seen
    seen.add(uuid_of(j))
    j2 = run(srv, rid, source("hello"), compile_limits={"memory": 900000})
    assert j2["compile"]["cached"] is True and uuid_of(j2) == uuid_of(j)

    # a project with the same file is another input (one archive: a zip records the time)
    archive = zip_b64({"main.c": source("hello")})
    j = run(srv, rid, archive, project=True)
    assert j["compile"]["cached"] is False and uuid_of(j) not in seen
    assert j["extract"]["exit_code"] == 0
    seen.add(uuid_of(j))
    j2 = run(srv, rid, archive, project=True)
    assert j2["compile"]["cached"] is True and uuid_of(j2) == uuid_of(j)
    assert j2["extract"] == j["extract"]
    assert j2["run"]["stdout"] == "hello\n"

    # the same runtime, deleted and installed again under the same name and definition
    assert srv.delete(f"/runtimes/{rid}").status_code == 200
    rid2 = add_c(srv)
    j = run(srv, rid2, source("hello"))
    assert j["compile"]["cached"] is False and uuid_of(j) not in seen
    assert j["run"]["stdout"] == "hello\n"


def test_entries_survive_a_restart():
    data = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        rid = add_c(s)
        first = run(s, rid, source("kept"))
    finally:
        assert s.stop() == 0, s.log_text()
    # a temporary file a crash would have left behind
    group = os.path.join(data, "compile-cache", next(iter(entries(s))))
    with open(os.path.join(group, ".tmp-0123456789abcdef"), "wb") as f:
        f.write(b"half an entry")
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        j = run(s, rid, source("kept"))
        assert j["compile"]["cached"] is True and uuid_of(j) == uuid_of(first)
        assert j["run"]["stdout"] == "kept\n"
        assert not os.path.exists(os.path.join(group, ".tmp-0123456789abcdef"))
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(data, ignore_errors=True)


def test_least_recently_used_entry_is_evicted():
    data = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        rid = add_c(s)
        a = run(s, rid, source("AA"))
        [path] = entry_paths(s)
        size = os.stat(path).st_size
    finally:
        assert s.stop() == 0, s.log_text()
    # room for two entries of this program (the others differ only in a two-letter string),
    # not three
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG,
               COMPILE_CACHE_SIZE=size * 5 // 2).start()
    try:
        b = run(s, rid, source("BB"))
        assert b["compile"]["cached"] is False
        # A is used again: B is now the least recently used
        j = run(s, rid, source("AA"))
        assert j["compile"]["cached"] is True and uuid_of(j) == uuid_of(a)
        c = run(s, rid, source("CC"))
        assert c["compile"]["cached"] is False
        assert sum(len(v) for v in entries(s).values()) == 2
        # B was evicted and compiles again; A was kept
        j = run(s, rid, source("BB"))
        assert j["compile"]["cached"] is False and uuid_of(j) != uuid_of(b)
        assert j["run"]["stdout"] == "BB\n"
        # B's new entry evicted the least recently used one, A (last used before C came in)
        j = run(s, rid, source("CC"))
        assert j["compile"]["cached"] is True and uuid_of(j) == uuid_of(c)
        j = run(s, rid, source("AA"))
        assert j["compile"]["cached"] is False and uuid_of(j) != uuid_of(a)
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(data, ignore_errors=True)


def test_cache_size_zero_disables_it():
    s = Server(ENVICUTOR_CATALOG=NO_CATALOG, COMPILE_CACHE_SIZE=0).start()
    try:
        rid = add_c(s)
        a = run(s, rid, source("x"))
        b = run(s, rid, source("x"))
        assert a["compile"]["cached"] is False and b["compile"]["cached"] is False
        assert uuid_of(a) != uuid_of(b)
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(s.data_dir, ignore_errors=True)


def test_bad_cache_size_stops_the_start():
    s = Server(ENVICUTOR_CATALOG=NO_CATALOG, COMPILE_CACHE_SIZE="lots")
    with pytest.raises(RuntimeError) as e:
        s.start()
    assert "COMPILE_CACHE_SIZE" in str(e.value)
    shutil.rmtree(s.data_dir, ignore_errors=True)


def test_deleting_the_runtime_drops_its_entries(srv):
    keep = add_c(srv, "other")
    rid = add_c(srv)
    run(srv, keep, source("other"))
    groups_before = set(entries(srv))
    run(srv, rid, source("one"))
    run(srv, rid, source("two"))
    [group] = set(entries(srv)) - groups_before
    assert len(entries(srv)[group]) == 2
    assert srv.delete(f"/runtimes/{rid}").status_code == 200
    assert group not in entries(srv)
    assert not os.path.exists(os.path.join(srv.data_dir, "compile-cache", group))
    # the other runtime's entry stays
    assert set(entries(srv)) == groups_before
    assert run(srv, keep, source("other"))["compile"]["cached"] is True


def test_a_group_whose_runtime_is_gone_is_dropped_at_start():
    data = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        rid = add_c(s)
        run(s, rid, source("x"))
        [group] = entries(s)
    finally:
        assert s.stop() == 0, s.log_text()
    # as if the server had died between the runtime's removal and its group's
    stray = os.path.join(data, "compile-cache", "no-such-runtime")
    os.makedirs(stray)
    shutil.copy(os.path.join(data, "compile-cache", group, entries(s)[group][0]), stray)
    owner = os.stat(os.path.join(data, "compile-cache"))
    for p in (stray, os.path.join(stray, entries(s)[group][0])):
        os.chown(p, owner.st_uid, owner.st_gid)
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        assert set(entries(s)) == {group}
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(data, ignore_errors=True)


def test_compile_error_is_cached_and_a_compile_timeout_is_not(srv):
    rid = add_c(srv)
    bad = "int main(void) { return undeclared; }\n"
    a = run(srv, rid, bad)
    assert a["compile"]["exit_status"] == "RE" and a["run"] is None
    assert "undeclared" in a["compile"]["stderr"]
    b = run(srv, rid, bad)
    assert b["compile"]["cached"] is True and uuid_of(b) == uuid_of(a)
    assert b["compile"]["stderr"] == a["compile"]["stderr"]
    assert b["compile"]["exit_code"] == a["compile"]["exit_code"] != 0
    assert b["run"] is None

    slow = source("x") + "/* SLOW */\n"
    before = entry_paths(srv)
    for _ in range(2):
        j = run(srv, rid, slow, compile_limits={"wall_time": 1})
        assert j["compile"]["exit_status"] == "TO"
        assert j["compile"]["cached"] is False
    assert entry_paths(srv) == before


def test_damaged_entry_is_a_miss_not_a_wrong_answer(srv):
    rid = add_c(srv)
    first = run(srv, rid, source("right"))
    [path] = entry_paths(srv)
    size = os.stat(path).st_size
    # root overwrites bytes in the middle of the read-only file (in the archive or outputs)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 16)
    j = run(srv, rid, source("right"))
    assert j["compile"]["cached"] is False and uuid_of(j) != uuid_of(first)
    assert j["run"]["stdout"] == "right\n"
    assert "damaged" in srv.log_text()
    # the damaged entry was replaced by the compile that followed
    k = run(srv, rid, source("right"))
    assert k["compile"]["cached"] is True and uuid_of(k) == uuid_of(j)

    # cut short: also a miss
    [path] = entry_paths(srv)
    with open(path, "r+b") as f:
        f.truncate(os.stat(path).st_size - 1)
    j = run(srv, rid, source("right"))
    assert j["compile"]["cached"] is False and j["run"]["stdout"] == "right\n"


def test_concurrent_identical_submissions_leave_one_whole_entry():
    from concurrent.futures import ThreadPoolExecutor
    s = Server(ENVICUTOR_CATALOG=NO_CATALOG, MAX_CONCURRENT_SUBMISSIONS=4).start()
    try:
        rid = add_c(s)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: run(s, rid, source("same")), range(4)))
        assert all(a["run"]["stdout"] == "same\n" for a in answers)
        compiled = {uuid_of(a) for a in answers if not a["compile"]["cached"]}
        assert compiled  # at least the first compiled
        assert len(entry_paths(s)) == 1
        j = run(s, rid, source("same"))
        assert j["compile"]["cached"] is True and uuid_of(j) in compiled
        assert j["run"]["stdout"] == "same\n"
        assert "damaged" not in s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(s.data_dir, ignore_errors=True)


def test_a_box_larger_than_the_cache_can_keep_is_not_kept():
    s = Server(ENVICUTOR_CATALOG=NO_CATALOG, COMPILE_CACHE_SIZE=1000000).start()
    try:
        rid = add_c(s)
        big = source("big") + "/* BIG */\n"
        a = run(s, rid, big)
        b = run(s, rid, big)
        assert a["run"]["stdout"] == b["run"]["stdout"] == "big\n"
        assert a["compile"]["cached"] is False and b["compile"]["cached"] is False
        assert uuid_of(a) != uuid_of(b)
        assert entry_paths(s) == []
        # a small one still is
        run(s, rid, source("small"))
        assert run(s, rid, source("small"))["compile"]["cached"] is True
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(s.data_dir, ignore_errors=True)


def test_a_cache_directory_made_by_root_is_handed_to_the_server():
    data = tempfile.mkdtemp(prefix="envicutor-api-", dir="/tmp")
    os.mkdir(os.path.join(data, "compile-cache"), 0o755)
    s = Server(data_dir=data, ENVICUTOR_CATALOG=NO_CATALOG).start()
    try:
        assert os.stat(os.path.join(data, "compile-cache")).st_uid == os.stat(data).st_uid != 0
        rid = add_c(s)
        run(s, rid, source("x"))
        assert run(s, rid, source("x"))["compile"]["cached"] is True
    finally:
        assert s.stop() == 0, s.log_text()
        shutil.rmtree(data, ignore_errors=True)
