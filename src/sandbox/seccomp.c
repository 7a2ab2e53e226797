/* What the filter refuses, and why:
 * - kernel surface a submission never needs and that has a history of privilege escalations:
 *   bpf, perf_event_open, userfaultfd, io_uring, keyrings (which would also survive into the
 *   next box that gets the same uid), module and kexec calls;
 * - changing the sandbox itself: the mount family, pivot_root, chroot, unshare, setns, and
 *   clone with namespace flags (user namespaces would give the program capabilities in a new
 *   namespace); clone3 answers ENOSYS because its flags live in memory the filter cannot read,
 *   and glibc then falls back to clone, whose flags it can;
 * - ptrace and process_vm_*: no debugging of anything, even within the box;
 * - inotify: a watch on a shared read-only file (/usr, /etc, /nix) would tell a box when
 *   other boxes open it, a channel between submissions; it answers ENOSYS, which file-watching
 *   libraries take as "use polling";
 * - the clock, swap, reboot, accounting, quotas: root-only anyway; refused to keep it so;
 * - socket families other than UNIX, INET and INET6 (raw packet, netlink, vsock, ...);
 * - every non-native ABI (i386 via int 0x80, x32): the process is killed, since a filter
 *   written for one syscall table means nothing for another.
 * Refused calls fail with EPERM (EAFNOSUPPORT for socket families), so well-behaved programs
 * can fall back. */
#include "sandbox/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

static const char *const refused[] = {
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "uselib",
    "lookup_dcookie",
    "vhangup",
    "iopl",
    "ioperm",
    "name_to_handle_at",
    "open_by_handle_at",
    "fanotify_init",
    "nfsservctl",
    "_sysctl",
    "sysfs",
    "ustat",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "kcmp",
    "pidfd_getfd",
    "landlock_create_ruleset",
    "memfd_secret",
    "lsm_set_self_attr",
};

#define NS_FLAGS                                                                                   \
    (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |     \
     CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

static int add(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned n, struct scmp_arg_cmp *cmp,
               const char *what, struct ev_err *err)
{
    int r = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (r < 0)
        return ev_fail(err, -r, "seccomp rule for %s", what);
    return 0;
}

int seccomp_build(void **bpf, unsigned short *len, struct ev_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return ev_fail(err, ENOMEM, "seccomp_init");
    int rc = -1;
    int r;
    cleanup_close int fd = -1;
    /* Killing the whole process needs Linux >= 4.14 (and a libseccomp that can tell, which it
     * cannot under valgrind); killing the calling thread is the fallback. */
    if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0)
        r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL);
    /* A binary tree of syscall numbers instead of a chain of comparisons: the kernel runs the
     * filter for every syscall number when it is installed (to cache the always-allowed ones),
     * so a run's set-up spent 0.175 ms installing the chain and 0.065 ms installing the tree,
     * and each syscall of the program goes through a few comparisons instead of up to a
     * hundred. */
    if (r < 0 || (r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0 ||
        (r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)) < 0) {
        ev_fail(err, -r, "seccomp attributes");
        goto out;
    }
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        int nr = seccomp_syscall_resolve_name(refused[i]);
        if (nr == __NR_SCMP_ERROR || nr < 0)
            continue; /* not a syscall of this architecture */
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0, NULL, refused[i], err) < 0)
            goto out;
    }
    if (add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, NULL, "clone3", err) < 0 ||
        add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(inotify_init), 0, NULL, "inotify", err) < 0 ||
        add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(inotify_init1), 0, NULL, "inotify", err) < 0)
        goto out;
    /* clone is allowed only when none of the namespace bits is set: refuse each bit. */
    for (unsigned bit = 0; bit < 64; bit++) {
        uint64_t flag = 1ull << bit;
        if (!(NS_FLAGS & flag))
            continue;
        struct scmp_arg_cmp ns = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
        if (add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &ns, "clone", err) < 0)
            goto out;
    }
    /* Socket families: allow AF_UNIX (1), AF_INET (2), AF_INET6 (10); refuse the rest. */
    int socket_calls[] = {SCMP_SYS(socket), SCMP_SYS(socketpair)};
    for (size_t s = 0; s < 2; s++) {
        struct scmp_arg_cmp c;
        for (unsigned fam = 0; fam < 10; fam++) {
            if (fam == AF_UNIX || fam == AF_INET)
                continue;
            c = (struct scmp_arg_cmp)SCMP_A0(SCMP_CMP_EQ, fam);
            if (add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), socket_calls[s], 1, &c, "socket", err) < 0)
                goto out;
        }
        c = (struct scmp_arg_cmp)SCMP_A0(SCMP_CMP_GT, AF_INET6);
        if (add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), socket_calls[s], 1, &c, "socket", err) < 0)
            goto out;
    }

    /* libseccomp 2.5 exports only to a file descriptor; a memfd keeps it in memory. */
    fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
    if (fd < 0) {
        ev_fail(err, errno, "memfd_create");
        goto out;
    }
    if ((r = seccomp_export_bpf(ctx, fd)) < 0) {
        ev_fail(err, -r, "seccomp_export_bpf");
        goto out;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % sizeof(struct sock_filter) != 0 ||
        size / sizeof(struct sock_filter) > 0xffff) {
        ev_fail(err, 0, "seccomp filter has an unexpected size %lld", (long long)size);
        goto out;
    }
    void *buf = malloc((size_t)size);
    if (!buf) {
        ev_fail(err, ENOMEM, "seccomp filter");
        goto out;
    }
    if (pread_full(fd, buf, (size_t)size, 0) != size) {
        free(buf);
        ev_fail(err, errno, "reading the seccomp filter back");
        goto out;
    }
    *bpf = buf;
    *len = (unsigned short)(size / sizeof(struct sock_filter));
    rc = 0;
out:
    seccomp_release(ctx);
    return rc;
}
