#!/bin/bash
# run-in-vm.sh - run a command inside a throw-away QEMU VM that boots a stock
# Debian kernel with cgroup v2 as the only hierarchy (memory, pids, cpu enabled
# in /sys/fs/cgroup/cgroup.subtree_control). The VM's root filesystem is the
# host's / shared read-only over 9p with a tmpfs overlay on top, so host tools
# (bash, python3, gcc, ...) and the build tree are available; writes (the
# overlay, /run, /tmp) live in guest RAM and are discarded at exit.
# `make test-cgroup2` runs the sandbox suite with it (tests/vm/cgroup2-suite.sh).
#
# Usage: run-in-vm.sh [--] COMMAND [ARG...]
#   The command runs as root in the current directory (same path in the VM),
#   with stdin=/dev/null; its stdout+stderr (merged) stream to our stdout.
#   Exit status: the command's own, 124 on timeout, 125 if the rig failed.
#        run-in-vm.sh --prepare
#   Only installs what the VM needs (qemu-system-x86, busybox-static, cpio,
#   xz-utils through apt) and builds the cached kernel + initramfs (the kernel
#   comes from the Debian archive with `apt-get download`). After that, runs
#   need no network. CI can run this step ahead, e.g. while it has network.
#
# Environment (all optional):
#   VMRIG_DIR=/tmp/vmrig   cache dir (kernel, initramfs) and per-run temp dirs
#   VMRIG_MEM=2G           guest RAM (writes to the overlay live in it, too).
#                          2G, not less: the sandbox's default stack limit is
#                          the memory limit (1 GB), so each thread reserves
#                          1 GB of address space, which the guest's heuristic
#                          overcommit refuses when RAM is smaller than that
#   VMRIG_CPUS=2           guest vCPUs (default: host CPUs, at most 4)
#   VMRIG_ACCEL=auto       auto | kvm | tcg   (auto: kvm only if /dev/kvm is
#                          usable and the CPU has vmx/svm; otherwise tcg)
#   VMRIG_TIMEOUT=600      seconds before the VM is killed (exit 124)
#   VMRIG_RW=/some/dir     host dir to mount read-WRITE at the same path
#   VMRIG_KERNEL_PKG=...   kernel package (default: what linux-image-amd64
#                          depends on, e.g. linux-image-6.1.0-57-amd64)
#   VMRIG_DEBUG=1          keep kernel messages and show the console log
#   VMRIG_QEMU_EXTRA="..." extra qemu options (word-split)
# Needs root (apt-get, reading all of /). First run downloads ~70 MB; after
# that a run costs ~3.5 s of boot under TCG. Environment is not passed through
# except PATH; use `run-in-vm.sh env VAR=x cmd`. No network in the guest.
set -euo pipefail

DIR=${VMRIG_DIR:-/tmp/vmrig}
MEM=${VMRIG_MEM:-2G}
NCPU=$(nproc); CPUS=${VMRIG_CPUS:-$(( NCPU > 4 ? 4 : NCPU ))}
ACCEL=${VMRIG_ACCEL:-auto}
TIMEOUT=${VMRIG_TIMEOUT:-600}
DEBUG=${VMRIG_DEBUG:-0}
PREPARE=0
[ "${1:-}" = "--prepare" ] && { PREPARE=1; shift; }
[ "${1:-}" = "--" ] && shift
[ $PREPARE = 1 ] || [ $# -ge 1 ] || { echo "usage: $0 [--] COMMAND [ARG...] | $0 --prepare" >&2; exit 125; }

log() { echo "vmrig: $*" >&2; }
die() { log "$*"; exit 125; }

# ---------------------------------------------------------------- setup (cached)
setup() {
  local need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  [[ " $(/bin/busybox --list 2>/dev/null | tr '\n' ' ') " == *" depmod "* ]] || need+=(busybox-static)
  command -v cpio >/dev/null || need+=(cpio)
  command -v xz >/dev/null || need+=(xz-utils)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
  ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox must be static (apt-get install busybox-static)"

  local pkg=${VMRIG_KERNEL_PKG:-}
  if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !n++ {print $2}' || true)
    [ -n "$pkg" ] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ && !n++ {print $2}' || true); }
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64"
  fi
  local kdir=$DIR/kernel/$pkg
  if [ ! -f "$kdir/initramfs.cpio.gz" ]; then
    log "building kernel + initramfs for $pkg in $kdir"
    rm -rf "$kdir"; mkdir -p "$kdir/dl" "$kdir/x"
    chown _apt "$kdir/dl" 2>/dev/null || true   # silences an apt sandbox warning
    (cd "$kdir/dl" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
    dpkg -x "$kdir"/dl/*.deb "$kdir/x"
    local kver; kver=$(ls "$kdir/x/lib/modules")
    cp "$kdir/x/boot/vmlinuz-$kver" "$kdir/kernel"
    # Unpacked ELF vmlinux boots via PVH, skipping BIOS + decompression (~4 s under TCG)
    local off; off=$(grep -abo $'\xfd7zXZ' "$kdir/kernel" | head -1 | cut -d: -f1 || true)
    if [ -n "$off" ] && command -v xz >/dev/null &&
       { tail -c +$((off + 1)) "$kdir/kernel" || true; } | xz -dc --single-stream > "$kdir/vmlinux" 2>/dev/null &&
       [ "$(head -c 4 "$kdir/vmlinux" | od -An -c | tr -d ' ')" = 177ELF ]; then
      mv "$kdir/vmlinux" "$kdir/kernel"
    else
      rm -f "$kdir/vmlinux"; log "note: booting the compressed bzImage (slower)"
    fi
    echo "$kver" > "$kdir/kver"

    local r=$kdir/root m
    mkdir -p "$r"/{bin,dev,proc,sys,mnt,newroot,lib/modules/$kver}
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    # modules (+ their dependencies) for virtio-9p and overlayfs
    /bin/busybox depmod -b "$kdir/x" "$kver"
    local mods=(virtio_pci 9pnet_virtio 9p overlay) files=()
    for m in "${mods[@]}"; do
      local line; line=$(grep -E "(^|/)${m}\.ko(\.[a-z]+)?:" "$kdir/x/lib/modules/$kver/modules.dep") \
        || die "module $m not found (built in?)"
      files+=(${line/:/})
    done
    for f in $(printf '%s\n' "${files[@]}" | sort -u); do
      mkdir -p "$r/lib/modules/$kver/$(dirname "$f")"
      cp "$kdir/x/lib/modules/$kver/$f" "$r/lib/modules/$kver/$f"
    done
    /bin/busybox depmod -b "$r" "$kver"
    write_init > "$r/init"; chmod 755 "$r/init"
    (cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) > "$kdir/initramfs.cpio.gz.tmp"
    mv "$kdir/initramfs.cpio.gz.tmp" "$kdir/initramfs.cpio.gz"
    rm -rf "$kdir/dl" "$kdir/x" "$kdir/root"
  fi
  KDIR=$kdir
}

# /init for the initramfs (runs as PID 1, busybox sh)
write_init() { cat <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
. /vmrig/conf
[ "$DEBUG" = 1 ] || echo 1 > /proc/sys/kernel/printk
fail() { echo "vmrig-init: $*" >/dev/ttyS0; echo "VMRIG_EXIT=125" >/dev/ttyS0; poweroff -f; }
modprobe -a virtio_pci 9pnet_virtio 9p overlay || fail "modprobe failed"
O=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /mnt/lower /mnt/rw
mount -t 9p -o $O,ro,cache=loose hostroot /mnt/lower || fail "9p mount of host root failed"
mount -t tmpfs -o mode=755 rw /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work /mnt/rw/upper/.vmrig
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work,xino=off overlay /newroot \
  || fail "overlay mount failed"
cp /bin/busybox /vmrig/* /newroot/.vmrig/
N=/newroot
mount --move /proc $N/proc; mount --move /sys $N/sys; mount --move /dev $N/dev
# cgroup v2 only, controllers enabled for children of the root cgroup
mount -t cgroup2 -o nsdelegate cgroup2 $N/sys/fs/cgroup || fail "cgroup2 mount failed"
echo '+memory +pids +cpu' > $N/sys/fs/cgroup/cgroup.subtree_control || fail "enabling controllers failed"
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $N/dev/pts
mount -t tmpfs -o mode=1777 shm $N/dev/shm
mount -t tmpfs -o mode=755 run $N/run
if [ -n "$RW" ]; then
  mount -t 9p -o $O,cache=none hostrw "$N$RW" || fail "9p mount of $RW failed"
fi
exec switch_root $N /.vmrig/busybox sh /.vmrig/stage2
EOF
}

# ---------------------------------------------------------------- run
mkdir -p "$DIR"
exec 9>"$DIR/.lock"; flock 9; setup; flock -u 9; exec 9>&-   # one builder at a time
if [ $PREPARE = 1 ]; then log "ready: $KDIR"; exit 0; fi
RUN=$(mktemp -d "$DIR/run.XXXXXX")
QPID=
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

RW=${VMRIG_RW:-}
[ -z "$RW" ] || { RW=$(realpath "$RW"); [ -d "$RW" ] || die "VMRIG_RW=$RW is not a directory"; }
mkdir -p "$RUN/x/vmrig"
printf 'DEBUG=%q\nRW=%q\n' "$DEBUG" "$RW" > "$RUN/x/vmrig/conf"
{ printf 'export PATH=%q\n' "$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"; printf 'exec'; printf ' %q' "$@"; echo; } > "$RUN/x/vmrig/cmd"
cat > "$RUN/x/vmrig/stage2" <<'EOF'
# PID 1 after switch_root: run the command, report its status, power off
B=/.vmrig/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
$B stty -F /dev/ttyS1 raw -echo
$B ip link set lo up; $B hostname vmrig
if [ -x /bin/bash ]; then SH=/bin/bash; else SH="$B sh"; fi
$SH /.vmrig/cmd </dev/null >/dev/ttyS1 2>&1
rc=$?
$B stty -F /dev/ttyS1 raw -echo   # waits until the output has been sent
echo "VMRIG_EXIT=$rc" > /dev/ttyS0
$B sync
# isa-debug-exit: qemu quits at once (a plain ACPI poweroff takes ~0.7 s more)
printf '\000' | $B dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
$B poweroff -f
EOF
(cd "$RUN/x" && find vmrig | cpio -o -H newc --quiet | gzip -1) > "$RUN/cmd.cpio.gz"
cat "$KDIR/initramfs.cpio.gz" "$RUN/cmd.cpio.gz" > "$RUN/initrd"

if [ "$ACCEL" = auto ]; then
  ACCEL=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; fi
fi
case $ACCEL in
  kvm) ACC=(-accel kvm -cpu host) ;;
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  *) die "VMRIG_ACCEL must be auto, kvm or tcg" ;;
esac
APPEND="console=ttyS0 panic=-1 oops=panic rdinit=/init"
[ "$DEBUG" = 1 ] || APPEND+=" quiet loglevel=1"
VIRTFS=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
[ -z "$RW" ] || VIRTFS+=(-virtfs "local,path=$RW,mount_tag=hostrw,security_model=none,multidevs=remap")

log "kernel $(cat "$KDIR/kver"), accel=$ACCEL, cpus=$CPUS, mem=$MEM"
T0=$(date +%s.%N)
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 ${VMRIG_QEMU_EXTRA:-} -nodefaults -display none -no-reboot -machine q35 "${ACC[@]}" \
  -smp "$CPUS" -m "$MEM" -kernel "$KDIR/kernel" -initrd "$RUN/initrd" -append "$APPEND" \
  "${VIRTFS[@]}" -device isa-debug-exit,iobase=0xf4,iosize=4 -serial "file:$RUN/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
  </dev/null 2>"$RUN/qemu.err" &
QPID=$!
QRC=0; wait "$QPID" || QRC=$?
QPID=
T1=$(date +%s.%N)

RC=$(tr -d '\r' < "$RUN/console.log" | sed -n 's/^VMRIG_EXIT=\([0-9]*\)$/\1/p' | tail -1)
[ "$DEBUG" != 1 ] || { log "--- qemu stderr + console log"; cat "$RUN/qemu.err" "$RUN/console.log" >&2; }
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
  log "TIMEOUT after ${TIMEOUT}s"; RC=124
elif [ -z "$RC" ]; then
  log "VM did not report an exit status; qemu stderr and console tail:"
  cat "$RUN/qemu.err" >&2; tail -n 40 "$RUN/console.log" >&2; RC=125
fi
log "exit status $RC, VM wall time $(awk "BEGIN{printf \"%.1f\", $T1 - $T0}")s"
exit "$RC"
