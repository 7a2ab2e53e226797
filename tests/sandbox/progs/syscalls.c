/* syscalls NAME...: tries each named call in a harmless way (bad descriptors or pointers) and
 * prints "NAME errno" per line, so a test can tell "allowed" (EBADF, EFAULT, EINVAL, ...)
 * from "refused by the filter" (EPERM, ENOSYS, EAFNOSUPPORT). */
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static long try(const char *name)
{
    if (!strcmp(name, "bpf"))
        return syscall(SYS_bpf, -1, NULL, 0);
    if (!strcmp(name, "perf_event_open"))
        return syscall(SYS_perf_event_open, NULL, -1, -1, -1, 0);
    if (!strcmp(name, "userfaultfd"))
        return syscall(SYS_userfaultfd, -1);
    if (!strcmp(name, "io_uring_setup"))
        return syscall(SYS_io_uring_setup, 0, NULL);
    if (!strcmp(name, "keyctl"))
        return syscall(SYS_keyctl, -1, 0, 0, 0, 0);
    if (!strcmp(name, "add_key"))
        return syscall(SYS_add_key, NULL, NULL, NULL, 0, 0);
    if (!strcmp(name, "mount"))
        return syscall(SYS_mount, NULL, NULL, NULL, 0, NULL);
    if (!strcmp(name, "unshare"))
        return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "clone_newuser"))
        /* CLONE_FS with CLONE_NEWUSER is EINVAL when the call gets through */
        return syscall(SYS_clone, CLONE_NEWUSER | CLONE_FS, NULL, NULL, NULL, 0);
    if (!strcmp(name, "clone3"))
        return syscall(SYS_clone3, NULL, 0);
    if (!strcmp(name, "ptrace"))
        return syscall(SYS_ptrace, -1, -1, NULL, NULL);
    if (!strcmp(name, "init_module"))
        return syscall(SYS_init_module, NULL, 0, NULL);
    if (!strcmp(name, "socket_packet"))
        return socket(AF_PACKET, SOCK_RAW, 0);
    if (!strcmp(name, "socket_netlink"))
        return socket(AF_NETLINK, SOCK_RAW, 0);
    if (!strcmp(name, "socket_inet"))
        return socket(AF_INET, SOCK_STREAM, 0);
    if (!strcmp(name, "socket_unix"))
        return socket(AF_UNIX, SOCK_STREAM, 0);
    if (!strcmp(name, "inotify_init1"))
        return syscall(SYS_inotify_init1, 0);
    if (!strcmp(name, "read"))
        return read(-1, NULL, 0);
    if (!strcmp(name, "x32_getpid"))
        return syscall(0x40000000 | SYS_getpid);
    errno = 0;
    return -2;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long r = try(argv[i]);
        printf("%s %s\n", argv[i],
               r >= 0                   ? "OK"
               : strerrorname_np(errno) ? strerrorname_np(errno)
                                        : "?");
        fflush(stdout);
    }
    return 0;
}
