#!/bin/bash
# The sandbox suite on a cgroup-v2-only kernel. Runs inside the VM (`make test-cgroup2` boots
# it with tests/vm/run-in-vm.sh): first from the root cgroup, then from a non-root cgroup that
# other processes share, as a shell in a systemd slice would be. Exits non-zero if any test
# fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
# Software emulation runs programs 10-70x slower than the host; only bounds that measure a
# program's own speed are scaled (conftest.slack), never the limits the sandbox enforces.
export ENVICUTOR_TIME_SCALE=${ENVICUTOR_TIME_SCALE:-8}
PYTEST=(/usr/bin/python3 -m pytest -q -p no:cacheprovider -rfEs)
DESELECT=()
while read -r t; do
    [ -n "$t" ] && [ "${t#\#}" = "$t" ] && DESELECT+=(--deselect "$t")
done < tests/vm/host-speed-tests

step() { printf '\n==== cgroup v2 (VM): %s\n' "$*"; }

step "kernel $(uname -r)"
grep -E ' - cgroup2? ' /proc/self/mountinfo | awk '{print $5, $(NF-2), $NF}'
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || grep -q ' - cgroup ' /proc/self/mountinfo; then
    echo "not a cgroup-v2-only system" >&2
    exit 1
fi
echo "root cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

fail=0
if command -v strace >/dev/null; then
    step "a run is born in its cgroup (clone3 CLONE_INTO_CGROUP) and killed with cgroup.kill"
    strace -f -o /tmp/cg2.strace -e trace=clone3,openat build/envicutor sandbox -- true >/dev/null
    grep -E 'clone3\(.*CLONE_INTO_CGROUP.*\) = [0-9]+$' /tmp/cg2.strace || fail=1
    # (a line may be split as "<unfinished ...>" when other traced processes interleave)
    grep -F '"cgroup.kill"' /tmp/cg2.strace && ! grep -F '"cgroup.kill"' /tmp/cg2.strace |
        grep -q '= -1 ' || fail=1
fi

step "1/2 from the root cgroup ($(cut -d: -f3 /proc/self/cgroup))"
echo "detected: $(build/envicutor sandbox --info)"
"${PYTEST[@]}" --durations=5 tests/sandbox "${DESELECT[@]}" || fail=1
step "the sandbox as the server's helper uses it (prepared roots, network namespaces made ahead)"
build/tests/test_sandbox_api || fail=1

# A slice with controllers handed down, and a cgroup in it that this shell, pytest and every
# sandbox command share: the sandbox cannot enable controllers there ("no internal
# processes") and must not move the others, so it delegates from the slice.
step "2/2 from a non-root cgroup shared with other processes"
S=/sys/fs/cgroup/ci.slice
mkdir -p "$S/shell.scope" && echo "+memory +pids +cpu" > "$S/cgroup.subtree_control" &&
    echo $$ > "$S/shell.scope/cgroup.procs" || { echo "cannot set the cgroup up" >&2; exit 1; }
echo "shell in $(cut -d: -f3 /proc/self/cgroup)"
echo "detected: $(build/envicutor sandbox --info)"
# (the two slowest tests, disk-bound I/O that no cgroup is involved in, ran in 1/2)
"${PYTEST[@]}" tests/sandbox "${DESELECT[@]}" \
    --deselect tests/sandbox/test_limits.py::test_box_inodes_are_bounded \
    --deselect tests/sandbox/test_limits.py::test_megabytes_on_both_streams_do_not_deadlock || fail=1

[ $fail = 0 ] && echo "cgroup v2 (VM): all passed" || echo "cgroup v2 (VM): FAILED" >&2
exit $fail
