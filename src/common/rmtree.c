#include "common/rmtree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

static int open_subdir(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        /* chmod 0 by its owner: we own or may override it; make it searchable. */
        cleanup_close int pfd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (pfd < 0)
            return -1;
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
        /* fchmodat on an O_PATH descriptor through /proc: the descriptor pins the inode we
         * opened, so this cannot be redirected by a rename. */
        if (chmod(proc, 0700) < 0)
            return -1;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    return fd;
}

static int remove_children(int fd, int depth, struct ev_err *err)
{
    if (depth > 512)
        return ev_fail(err, ELOOP, "directory tree too deep to remove");
    /* fdopendir takes the descriptor it is given; a copy, close-on-exec like every descriptor
     * of the multi-threaded helper, where another thread may fork and exec at any moment. */
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0)
        return ev_fail(err, errno, "duplicate a directory descriptor");
    cleanup_closedir DIR *d = fdopendir(dupfd);
    if (!d) {
        close(dupfd);
        return ev_fail(err, errno, "fdopendir");
    }
    struct dirent *de;
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno)
                return ev_fail(err, errno, "readdir");
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(fd, de->d_name, 0) == 0 || errno == ENOENT)
            continue;
        if (errno != EISDIR && errno != EPERM)
            return ev_fail(err, errno, "unlink %s", de->d_name);
        cleanup_close int sub = open_subdir(fd, de->d_name);
        if (sub < 0)
            return ev_fail(err, errno, "open directory %s", de->d_name);
        if (remove_children(sub, depth + 1, err) < 0)
            return -1;
        if (unlinkat(fd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
            return ev_fail(err, errno, "rmdir %s", de->d_name);
    }
    return 0;
}

int rmtree_at(int dirfd, const char *name, struct ev_err *err)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    cleanup_close int fd = open_subdir(dirfd, name);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return ev_fail(err, errno, "open %s", name);
    }
    if (remove_children(fd, 0, err) < 0)
        return ev_wrap(err, "removing %s: ", name);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return ev_fail(err, errno, "rmdir %s", name);
    return 0;
}
