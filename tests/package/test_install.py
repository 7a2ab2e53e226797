"""`make install` with PREFIX and DESTDIR, the man page, the systemd unit and --version: the
files land where a deployer (and the Debian package) expects them, the page renders without a
warning, the unit passes systemd-analyze verify."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "envicutor")


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    p = run("make", "-C", ROOT, "install", f"DESTDIR={d}", "PREFIX=/usr")
    assert p.returncode == 0, p.stderr
    return str(d)


def test_version():
    with open(os.path.join(ROOT, "src", "cli", "version.h")) as f:
        version = re.search(r'#define ENVICUTOR_VERSION "([^"]+)"', f.read()).group(1)
    p = run(BIN, "--version")
    assert p.returncode == 0 and p.stdout == f"envicutor {version}\n"


SERVER_LIBS = ["libmicrohttpd.so", "libsqlite3.so", "libhiredis.so", "libwslay.so"]


def test_the_sandbox_command_loads_none_of_the_servers_libraries():
    """The server's libraries are loaded with dlopen on first use (src/common/lazylib.h): the
    binary does not need them, the one-shot sandbox does not load them, a server does."""
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", run("readelf", "-d", BIN).stdout)
    assert needed and not [n for n in needed if any(n.startswith(l) for l in SERVER_LIBS)], needed
    env = dict(os.environ, LD_DEBUG="files")
    p = run(BIN, "sandbox", "--", "/bin/true", env=env)
    assert p.returncode == 0, p.stderr
    assert "file=libjansson.so" in p.stderr, p.stderr[:2000]  # the debug output is there
    assert not [l for l in SERVER_LIBS if f"file={l}" in p.stderr], p.stderr[:2000]


def test_install_puts_every_file_under_destdir_and_prefix(dest):
    files = set()
    for base, _, names in os.walk(dest):
        files |= {os.path.relpath(os.path.join(base, n), dest) for n in names}
    catalog = {f"usr/share/envicutor/catalog/{f}"
               for f in os.listdir(os.path.join(ROOT, "runtimes", "catalog")) if f.endswith(".json")}
    assert len(catalog) >= 6
    expected = {"usr/bin/envicutor", "usr/share/man/man1/envicutor.1",
                "usr/lib/systemd/system/envicutor.service",
                "usr/share/doc/envicutor/README.md", "usr/share/doc/envicutor/server.md",
                "usr/share/doc/envicutor/openapi.yaml"} | catalog
    assert expected <= files, expected - files
    # nothing outside PREFIX, nothing unexpected
    assert all(f.startswith("usr/") for f in files), files
    assert all(f in expected or f.startswith("usr/share/doc/envicutor/") for f in files), \
        files - expected
    assert os.stat(os.path.join(dest, "usr/bin/envicutor")).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(dest, "usr/share/man/man1/envicutor.1")).st_mode & 0o777 == 0o644
    p = run(os.path.join(dest, "usr/bin/envicutor"), "--version")
    assert p.returncode == 0 and p.stdout.startswith("envicutor ")


def test_the_unit_starts_the_installed_binary(dest):
    with open(os.path.join(dest, "usr/lib/systemd/system/envicutor.service")) as f:
        unit = f.read()
    assert "ExecStart=/usr/bin/envicutor serve\n" in unit
    for line in ["Delegate=yes", "StateDirectory=envicutor", "Restart=on-failure",
                 "KillMode=mixed", "Environment=ENVICUTOR_DATA_DIR=/var/lib/envicutor"]:
        assert line + "\n" in unit
    assert "@BINDIR@" not in unit and not re.search(r"^User=", unit, re.M)


def test_the_installed_binary_finds_the_installed_catalog(dest):
    # the binary beside no checkout: `serve --help` documents the fallback it uses
    p = run(os.path.join(dest, "usr/bin/envicutor"), "serve", "--help")
    assert "share/envicutor/catalog" in p.stdout


def test_the_man_page_renders_without_warnings(dest):
    page = os.path.join(dest, "usr/share/man/man1/envicutor.1")
    p = run("groff", "-ww", "-z", "-man", page)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = run("man", "-l", page, env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"})
    assert p.returncode == 0 and p.stderr == "", p.stderr
    text = re.sub(r".\x08", "", p.stdout)
    # every variable serve reads is documented
    cfg = open(os.path.join(ROOT, "src", "cli", "cmd_serve.c")).read()
    usage = cfg[cfg.index("Configuration, from environment"):cfg.index("Connections are bounded")]
    names = set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT)\b", usage))
    names |= {"MAX_TESTS", "ENVICUTOR_RUN_DIR", "SHUTDOWN_TIMEOUT"}
    missing = [n for n in sorted(names) if n not in text]
    assert not missing, missing
    for section in ["serve", "sandbox", "worker", "--version", "SIGTERM"]:
        assert section in text


def test_the_unit_passes_systemd_analyze_verify(dest, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists and that Documentation= resolves: point both at
    # the DESTDIR copy
    with open(os.path.join(dest, "usr/lib/systemd/system/envicutor.service")) as f:
        unit = f.read().replace("/usr/bin/envicutor", os.path.join(dest, "usr/bin/envicutor"))
    path = tmp_path / "envicutor.service"
    path.write_text(unit)
    env = {**os.environ, "MANPATH": os.path.join(dest, "usr/share/man")}
    p = run("systemd-analyze", "verify", str(path), env=env)
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    # and the check can fail: a unit with a mistake is reported
    path.write_text(unit.replace("Restart=on-failure", "Restart=sometimes"))
    p = run("systemd-analyze", "verify", str(path), env=env)
    assert "sometimes" in p.stdout + p.stderr


def test_make_deb_builds_a_package_of_the_installed_files(tmp_path):
    if not shutil.which("dpkg-deb") or not shutil.which("dpkg-shlibdeps"):
        pytest.skip("dpkg-dev is not installed")
    b = tmp_path / "b"
    # a build directory of its own, so that this test never races the suite's build/
    p = run("make", "-C", ROOT, f"B={b}", "deb")
    assert p.returncode == 0, p.stdout + p.stderr
    debs = list(b.glob("envicutor_*.deb"))
    assert len(debs) == 1
    deb = str(debs[0])
    fields = run("dpkg-deb", "-f", deb).stdout
    assert "Package: envicutor\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    for lib in ["libc6", "libjansson4", "libseccomp2", "libsqlite3-0", "libmicrohttpd12",
                "libhiredis0.14", "libwslay1"]:
        assert lib in depends, depends
    listing = run("dpkg-deb", "-c", deb).stdout
    for path in ["./usr/bin/envicutor", "./lib/systemd/system/envicutor.service",
                 "./usr/share/man/man1/envicutor.1.gz", "./usr/share/envicutor/catalog/bash.json",
                 "./usr/share/doc/envicutor/copyright", "./etc/default/envicutor"]:
        assert re.search(rf" {re.escape(path)}$", listing, re.M), path
    assert re.search(r"^-rw------- root/root .* \./etc/default/envicutor$", listing, re.M)
    ctrl = tmp_path / "ctrl"
    assert run("dpkg-deb", "-e", deb, str(ctrl)).returncode == 0
    assert (ctrl / "conffiles").read_text() == "/etc/default/envicutor\n"
    for script in ["postinst", "prerm", "postrm"]:
        assert run("sh", "-n", str(ctrl / script)).returncode == 0
    # the md5sums name every shipped file but the conffile
    sums = {l.split()[1] for l in (ctrl / "md5sums").read_text().splitlines()}
    files = {l.split()[-1][2:] for l in listing.splitlines() if l.startswith("-")}
    assert sums == files - {"etc/default/envicutor"}
