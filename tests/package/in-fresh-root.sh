#!/bin/bash
# Run by tests/package/run inside the fresh root, from the clone's top.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
step() { printf '\n==== %s\n' "$*"; }
fail() { echo "tests/package: FAILED: $*" >&2; exit 1; }

step "build the package"
apt-get update -qq
build="build-essential pkg-config libjansson-dev libseccomp-dev libmicrohttpd-dev libsqlite3-dev
       libwslay-dev libhiredis-dev"
apt-get install -y -qq --no-install-recommends $build >/dev/null
make -j"$(nproc)" deb >/dev/null
deb=$(ls build/envicutor_*.deb)
cp "$deb" /tmp/
deb=/tmp/$(basename "$deb")

step "remove the build dependencies: the package must bring what it needs"
# the libraries only Envicutor needs go too (autoremove alone may keep them: apt counts
# recommendations), so that only the package's Depends can bring them back
apt-get purge -y -qq $build libjansson4 libmicrohttpd12 libwslay1 libhiredis0.14 >/dev/null
apt-get autoremove --purge -y -qq >/dev/null
for lib in libjansson4 libmicrohttpd12 libwslay1 libhiredis0.14; do
    ! dpkg -s "$lib" >/dev/null 2>&1 || fail "$lib survived the purge; the test would prove nothing"
done
mv build /tmp/build-tree   # nothing of the tree's build is reachable any more

step "install $deb"
apt-get install -y -qq --no-install-recommends "$deb" python3 >/dev/null
dpkg -s envicutor | grep -q '^Status: install ok installed' || fail "not installed"
envicutor --version
unit=/lib/systemd/system/envicutor.service
[ -f "$unit" ] || fail "no unit"
[ -f /usr/share/man/man1/envicutor.1.gz ] || fail "no man page"

step "start the server as the unit does (no systemd as PID 1 here)"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = "/usr/bin/envicutor serve" ] || fail "ExecStart: $exec_start"
unit_env=$(sed -n 's/^Environment=//p' "$unit")
mkdir -p /var/lib/envicutor && chmod 0700 /var/lib/envicutor   # StateDirectory=
log=/tmp/envicutor.log
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $unit_env PORT=5000 $exec_start >"$log" 2>&1 &
pid=$!
python3 - <<'PY' || { cat "$log"; fail "the installed server did not answer"; }
import json, time, urllib.request
url = "http://127.0.0.1:5000"
for _ in range(600):
    try:
        urllib.request.urlopen(url + "/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
rts = {r["name"]: r["id"] for r in json.load(urllib.request.urlopen(url + "/runtimes"))}
body = json.dumps({"runtime_id": rts["Bash"], "source_code": "read a; echo \"hello $a\"",
                   "input": "package"}).encode()
req = urllib.request.Request(url + "/execute", body, {"Content-Type": "application/json"})
out = json.load(urllib.request.urlopen(req, timeout=120))
assert out["run"]["stdout"] == "hello package\n", out
metrics = urllib.request.urlopen(url + "/metrics").read().decode()
assert 'envicutor_http_requests_total{method="POST",route="/execute",status="200"} 1' in metrics
print("a submission ran through the installed server")
PY
grep -q "catalog" "$log" || true
kill -TERM "$pid"
wait "$pid" || { cat "$log"; fail "the server did not exit 0 on SIGTERM"; }

step "purge the package"
apt-get purge -y -qq envicutor >/dev/null
for f in /usr/bin/envicutor "$unit" /usr/share/envicutor /var/lib/envicutor /etc/default/envicutor; do
    [ ! -e "$f" ] || fail "$f is left after purge"
done
# no procps here: the processes from /proc, by uid (the box range) and by command line
left=""
for d in /proc/[0-9]*; do
    uid=$(awk '/^Uid:/ {print $2}' "$d/status" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
    if [ -n "$uid" ] && { [ "$uid" -ge 60000 ] && [ "$uid" -lt 61000 ] || [[ "$cmd" == *envicutor* ]]; }; then
        left="$left ${d#/proc/}:$cmd"
    fi
done
[ -z "$left" ] || fail "processes left:$left"
# box mounts (the locks directory itself is bind-mounted by run-fresh.sh)
mounts=$(grep -cE '/run/envicutor/(boxes|root)' /proc/self/mountinfo || true)
[ "$mounts" = 0 ] || fail "$mounts box mounts left"
echo "tests/package: the package built, installed, served a submission and purged cleanly"
