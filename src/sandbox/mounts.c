#include "sandbox/mounts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fileutil.h"

/* /etc entries a program may need. Everything else stays out, secrets above all (shadow,
 * gshadow, ssh keys, sudoers, machine-id, the host's passwd with its real users). passwd,
 * group, hosts, hostname and nsswitch.conf are written fresh for each box. */
static const char *const etc_allowed[] = {
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "java-*",
    "python3*",
    "perl",
    "ruby*",
    "php",
    "R",
    "mono",
    "mime.types",
    "bash.bashrc",
    "profile",
    "inputrc",
    "locale.alias",
    "locale.conf",
    "gai.conf",
    "protocols",
    "services",
    "magic",
    "magic.mime",
    "fonts",
    "debian_version",
    "os-release",
    "lsb-release",
    "gprolog",
    "gdb",
    "valgrind",
    "gcc",
    "emacs",
    "vim",
    "nanorc",
    "xml",
    "sgml",
};

/* A trailing '*' is the only wildcard of the list above (fnmatch over every entry of /etc for
 * every pattern took a quarter of a millisecond, a run's worth of a fast program). */
static bool etc_match(const char *pattern, const char *name)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, name, n - 1) == 0;
    return strcmp(pattern, name) == 0;
}

static const char *const top_candidates[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

int mounts_scan_host(struct sbx_host *host, struct ev_err *err)
{
    cleanup_closedir DIR *d = opendir(host->etc_dir);
    if (!d)
        return ev_fail(err, errno, "opendir %s", host->etc_dir);
    struct dirent *de;
    host->n_etc = 0;
    while ((de = readdir(d))) {
        bool ok = false;
        for (size_t i = 0; i < sizeof(etc_allowed) / sizeof(etc_allowed[0]) && !ok; i++)
            ok = etc_match(etc_allowed[i], de->d_name);
        if (!ok || strlen(de->d_name) >= sizeof(host->etc_names[0]))
            continue;
        if (host->n_etc == SBX_MAX_ETC)
            break;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        unsigned i = host->n_etc;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlinkat(dirfd(d), de->d_name, host->etc_links[i],
                                   sizeof(host->etc_links[i]) - 1);
            if (n <= 0 || (size_t)n >= sizeof(host->etc_links[i]) - 1)
                continue;
            host->etc_links[i][n] = '\0';
            host->etc_types[i] = DT_LNK;
        } else if (S_ISDIR(st.st_mode)) {
            host->etc_types[i] = DT_DIR;
        } else if (S_ISREG(st.st_mode)) {
            host->etc_types[i] = DT_REG;
        } else {
            continue;
        }
        snprintf(host->etc_names[i], sizeof(host->etc_names[i]), "%s", de->d_name);
        host->n_etc++;
    }

    host->n_top = 0;
    for (size_t i = 0; i < sizeof(top_candidates) / sizeof(top_candidates[0]); i++) {
        char path[32];
        snprintf(path, sizeof(path), "/%s", top_candidates[i]);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        unsigned n = host->n_top;
        snprintf(host->top_names[n], sizeof(host->top_names[n]), "%s", top_candidates[i]);
        host->top_links[n][0] = '\0';
        if (S_ISLNK(st.st_mode)) {
            ssize_t len = readlink(path, host->top_links[n], sizeof(host->top_links[n]) - 1);
            if (len <= 0 || (size_t)len >= sizeof(host->top_links[n]) - 1)
                continue;
            host->top_links[n][len] = '\0';
        } else if (!S_ISDIR(st.st_mode)) {
            continue;
        }
        host->n_top++;
    }
    return 0;
}

static const char *const reserved_targets[] = {"/",      "/usr",   "/etc",   "/dev",  "/proc",
                                               "/tmp",   "/box",   "/bin",   "/sbin", "/lib",
                                               "/lib32", "/lib64", "/libx32"};

int mounts_check_target(const char *t, struct ev_err *err)
{
    if (!t || t[0] != '/' || strlen(t) > 200)
        return ev_fail(err, 0, "mount target '%s' must be an absolute path", t ? t : "");
    if (strstr(t, "//") || strstr(t, "/./") || strstr(t, "/../") ||
        (strlen(t) > 1 && t[strlen(t) - 1] == '/'))
        return ev_fail(err, 0, "mount target '%s' must be a normalised path", t);
    size_t n = strlen(t);
    if ((n >= 2 && strcmp(t + n - 2, "/.") == 0) || (n >= 3 && strcmp(t + n - 3, "/..") == 0))
        return ev_fail(err, 0, "mount target '%s' must be a normalised path", t);
    for (size_t i = 0; i < sizeof(reserved_targets) / sizeof(reserved_targets[0]); i++) {
        size_t rl = strlen(reserved_targets[i]);
        if (strcmp(t, reserved_targets[i]) == 0 ||
            (rl > 1 && strncmp(t, reserved_targets[i], rl) == 0 && t[rl] == '/'))
            return ev_fail(err, 0, "mount target '%s' is inside %s, which the sandbox builds", t,
                           reserved_targets[i]);
    }
    return 0;
}

/* ---- child side: no allocation from here on ---------------------------------------------- */

#define RO_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV)

static int bind_with_flags(const char *src, const char *dst, unsigned long flags,
                           struct ev_err *err)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return ev_fail(err, errno, "bind %s on %s", src, dst);
    /* A bind mount takes its flags only from a remount. */
    if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        return ev_fail(err, errno, "remount %s", dst);
    return 0;
}

/* A read-only bind that is part of the tree made read-only at once by mount_setattr (Linux
 * >= 5.12), or remounted on its own on older kernels. */
static int bind_ro(const struct root_plan *p, const char *src, const char *dst, struct ev_err *err)
{
    if (!p->host->have_mount_setattr)
        return bind_with_flags(src, dst, RO_FLAGS, err);
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return ev_fail(err, errno, "bind %s on %s", src, dst);
    return 0;
}

/* A read-only overlay of `lower` on `dst`, instead of a bind. Its files are inodes of its own,
 * so flock() on one of them conflicts only with locks taken through this very mount: the
 * shared trees (/usr, /etc, a runtime's directory, /nix) are each box's own overlay, and a
 * lock no longer carries a signal from one box to another. Without an upper layer overlayfs
 * wants two lower ones; the second is the host's empty directory. */
static int overlay_ro(const struct sbx_host *h, const char *lower, const char *dst,
                      struct ev_err *err)
{
    char opts[600];
    int n = snprintf(opts, sizeof(opts), "lowerdir=%s:%s", lower, h->empty_dir);
    if (n < 0 || (size_t)n >= sizeof(opts))
        return ev_fail(err, ENAMETOOLONG, "overlay of %s", lower);
    if (mount("overlay", dst, "overlay", RO_FLAGS, opts) < 0)
        return ev_fail(err, errno, "overlay of %s on %s", lower, dst);
    return 0;
}

static int make_file(const char *path, struct ev_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return ev_fail(err, errno, "create %s", path);
    close(fd);
    return 0;
}

/* A caller's mount target and the directories leading to it, below root. */
static int make_target_dirs(const char *root, const char *target, struct ev_err *err)
{
    char path[512];
    int n = snprintf(path, sizeof(path), "%s%s", root, target);
    if (n < 0 || (size_t)n >= sizeof(path))
        return ev_fail(err, ENAMETOOLONG, "%s", target);
    return make_dirs(path, strlen(root) + 1, 0755, err);
}

static int write_generated(const char *root, const char *name, const char *text, struct ev_err *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/etc/%s", root, name);
    return create_file_at(AT_FDCWD, path, 0644, text, strlen(text), err);
}

static int build_etc(const struct root_plan *p, const char *root, struct ev_err *err)
{
    const struct sbx_host *h = p->host;
    char path[512], src[600], staging[512];
    snprintf(path, sizeof(path), "%s/etc", root);
    if (make_dir(path, 0755, err) < 0)
        return -1;
    /* The entries are bound from an overlay of the whole /etc, for the overlay's inodes (see
     * overlay_ro); the overlay itself is then detached, and only the entries stay visible. */
    snprintf(staging, sizeof(staging), "%s/.etc", root);
    if (make_dir(staging, 0700, err) < 0 || overlay_ro(h, h->etc_dir, staging, err) < 0)
        return -1;
    for (unsigned i = 0; i < h->n_etc; i++) {
        snprintf(path, sizeof(path), "%s/etc/%s", root, h->etc_names[i]);
        snprintf(src, sizeof(src), "%s/%s", staging, h->etc_names[i]);
        if (h->etc_types[i] == DT_LNK) {
            if (symlink(h->etc_links[i], path) < 0)
                return ev_fail(err, errno, "symlink %s", path);
            continue;
        }
        /* An entry removed since the host was scanned (a package's upgrade can remove one)
         * is left out rather than failing every run. */
        if (faccessat(AT_FDCWD, src, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
            continue;
        if ((h->etc_types[i] == DT_DIR ? make_dir(path, 0755, err) : make_file(path, err)) < 0)
            return -1;
        if (bind_ro(p, src, path, err) < 0)
            return -1;
    }
    if (umount2(staging, MNT_DETACH) < 0)
        return ev_fail(err, errno, "detach %s", staging);
    if (rmdir(staging) < 0)
        return ev_fail(err, errno, "rmdir %s", staging);
    char text[512];
    snprintf(text, sizeof(text),
             "root:x:0:0:root:/root:/bin/sh\n"
             "box:x:%u:%u:box:/box:/bin/sh\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
             (unsigned)p->uid, (unsigned)p->gid);
    if (write_generated(root, "passwd", text, err) < 0)
        return -1;
    snprintf(text, sizeof(text), "root:x:0:\nbox:x:%u:\nnogroup:x:65534:\n", (unsigned)p->gid);
    if (write_generated(root, "group", text, err) < 0 ||
        write_generated(root, "hosts", "127.0.0.1\tlocalhost box\n::1\tlocalhost box\n", err) < 0 ||
        write_generated(root, "hostname", "box\n", err) < 0 ||
        write_generated(root, "nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n", err) <
            0)
        return -1;
    return 0;
}

static int build_dev(const char *root, struct ev_err *err)
{
    /* The nodes are made afresh in each box's own /dev rather than bound from the host's: a
     * bound node is the host's inode, shared by every box, and flock() on a shared inode is a
     * channel between boxes. This /dev is the one mount without nodev; the box cannot add a
     * node to it (no CAP_MKNOD, and it is remounted read-only). */
    static const struct {
        const char *name;
        unsigned minor;
    } devices[] = {{"null", 3}, {"zero", 5}, {"full", 7}, {"random", 8}, {"urandom", 9}};
    char dev[512], path[600];
    snprintf(dev, sizeof(dev), "%s/dev", root);
    if (make_dir(dev, 0755, err) < 0)
        return -1;
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755") < 0)
        return ev_fail(err, errno, "mount tmpfs on /dev");
    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dev, devices[i].name);
        if (mknod(path, S_IFCHR | 0666, makedev(1, devices[i].minor)) < 0)
            return ev_fail(err, errno, "mknod %s", path);
        if (chmod(path, 0666) < 0) /* whatever the umask */
            return ev_fail(err, errno, "chmod %s", path);
    }
    static const char *const links[][2] = {
        {"fd", "/proc/self/fd"},
        {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"},
        {"shm", "/tmp"}, /* POSIX shm lives in the box's /tmp */
    };
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dev, links[i][0]);
        if (symlink(links[i][1], path) < 0)
            return ev_fail(err, errno, "symlink %s", path);
    }
    if (mount(NULL, dev, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
        return ev_fail(err, errno, "remount /dev read-only");
    return 0;
}

/* The read-only part of the tree on a tmpfs at the staging point: /usr, the top-level links,
 * /etc, and the mount points of what each run adds. */
static int build_base(const struct root_plan *p, const char *root, struct ev_err *err)
{
    const struct sbx_host *h = p->host;
    char path[512];

    /* Nothing we mount may propagate back to the host, nor host mounts into the box. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return ev_fail(err, errno, "make / private");
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755") < 0)
        return ev_fail(err, errno, "mount tmpfs on %s", root);

    snprintf(path, sizeof(path), "%s/usr", root);
    if (make_dir(path, 0755, err) < 0 || overlay_ro(h, "/usr", path, err) < 0)
        return -1;
    for (unsigned i = 0; i < h->n_top; i++) {
        snprintf(path, sizeof(path), "%s/%s", root, h->top_names[i]);
        if (h->top_links[i][0]) {
            if (symlink(h->top_links[i], path) < 0)
                return ev_fail(err, errno, "symlink %s", path);
        } else {
            char src[32];
            snprintf(src, sizeof(src), "/%s", h->top_names[i]);
            if (make_dir(path, 0755, err) < 0 || overlay_ro(h, src, path, err) < 0)
                return -1;
        }
    }
    if (build_etc(p, root, err) < 0)
        return -1;
    /* Mount points of what is not read-only, made while the root still is writable. */
    static const struct {
        const char *name;
        mode_t mode;
    } points[] = {{"dev", 0755}, {"proc", 0555}, {"tmp", 01777}, {"box", 0755}};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, points[i].name);
        if (make_dir(path, points[i].mode, err) < 0)
            return -1;
    }
    /* What /proc/1/cmdline shows (mount_proc_and_tmp): empty, and hidden under /proc */
    snprintf(path, sizeof(path), "%s/proc/cmdline", root);
    if (make_file(path, err) < 0)
        return -1;
    for (size_t i = 0; i < p->n_mounts; i++)
        if (make_target_dirs(root, p->mounts[i].target, err) < 0)
            return -1;
    return 0;
}

/* Everything so far, the root included, read-only, nosuid and nodev in one call, instead of
 * one remount per bind (there are dozens, mostly /etc entries). */
static int make_tree_read_only(const struct root_plan *p, const char *root, struct ev_err *err)
{
    if (!p->host->have_mount_setattr)
        return 0; /* each bind was remounted on its own */
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    if (syscall(SYS_mount_setattr, AT_FDCWD, root, AT_RECURSIVE, &attr, sizeof(attr)) < 0)
        return ev_fail(err, errno, "make the root read-only");
    return 0;
}

/* Makes the tree at the staging point the root: pivot_root(".", ".") stacks the old root
 * under the new one at the same place, and the lazy unmount takes the whole host tree away. */
static int switch_root(const struct root_plan *p, const char *root, struct ev_err *err)
{
    if (chdir(root) < 0)
        return ev_fail(err, errno, "chdir %s", root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return ev_fail(err, errno, "pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        return ev_fail(err, errno, "detach the host root");
    if (chdir("/") < 0)
        return ev_fail(err, errno, "chdir /");
    if (!p->host->have_mount_setattr && mount(NULL, "/", NULL, MS_REMOUNT | RO_FLAGS, NULL) < 0)
        return ev_fail(err, errno, "remount / read-only");
    return 0;
}

/* The box's init shares the caller's memory (sandbox/run.c), so the kernel would show the
 * caller's command line (the helper's names the host's data directory) as init's, and anyone may
 * read a process's cmdline (the rest of what /proc shows of init's memory, environ, maps, mem,
 * needs ptrace access, which the box's uid lacks). An empty file of the box's read-only tree
 * (its own inode, no channel to another box), hidden under /proc, covers it under both of the
 * names /proc gives it. */
static int cover_init_cmdline(const struct root_plan *p, const char *root, int empty,
                              struct ev_err *err)
{
    static const char *const names[] = {"1/cmdline", "1/task/1/cmdline"};
    char src[512], path[512];
    snprintf(src, sizeof(src), "%s/proc/self/fd/%d", root, empty);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/proc/%s", root, names[i]);
        if (mount(src, path, NULL, MS_BIND, NULL) < 0)
            return ev_fail(err, errno, "cover /proc/%s", names[i]);
        /* without mount_setattr the tree is made read-only only at switch_root, root alone */
        if (!p->host->have_mount_setattr &&
            mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | RO_FLAGS, NULL) < 0)
            return ev_fail(err, errno, "remount /proc/%s read-only", names[i]);
    }
    return 0;
}

static int mount_proc_and_tmp(const struct root_plan *p, const char *root, struct ev_err *err)
{
    char path[512], opts[96];
    snprintf(path, sizeof(path), "%s/proc/cmdline", root);
    int empty = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
    if (empty < 0)
        return ev_fail(err, errno, "open %s", path);
    snprintf(path, sizeof(path), "%s/proc", root);
    int rc = mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0
                 ? ev_fail(err, errno, "mount /proc")
                 : cover_init_cmdline(p, root, empty, err);
    close(empty);
    if (rc < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/tmp", root);
    snprintf(opts, sizeof(opts), "size=%lluk,mode=1777", (unsigned long long)p->tmp_kb);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return ev_fail(err, errno, "mount tmpfs on /tmp (%s)", opts);
    return 0;
}

static int check_mounted(const struct sbx_mount *m, const struct stat *st, struct ev_err *err)
{
    if ((m->dev || m->ino) && (st->st_dev != m->dev || st->st_ino != m->ino))
        return ev_fail(err, 0, "bind %s on %s: not the directory that was checked", m->source,
                       m->target);
    return 0;
}

/* The source is opened first and checked, then named to overlayfs through its descriptor, so
 * the directory checked is the one mounted. */
static int open_extra(const struct sbx_mount *m, struct ev_err *err)
{
    int fd = open(m->source, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "mount %s on %s", m->source, m->target);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return ev_fail(err, e, "stat %s", m->source);
    }
    if (check_mounted(m, &st, err) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int overlay_extra(const struct root_plan *p, const struct sbx_mount *m, const char *dst,
                         struct ev_err *err)
{
    int fd = open_extra(m, err);
    if (fd < 0)
        return -1;
    char lower[32];
    snprintf(lower, sizeof(lower), "/proc/self/fd/%d", fd);
    int rc = overlay_ro(p->host, lower, dst, err);
    int e = err ? err->errnum : 0;
    close(fd);
    return rc < 0 ? ev_fail(err, e, "overlay of %s on %s", m->source, dst) : 0;
}

/* ---- /box ---------------------------------------------------------------------------------- */

/* The throw-away layer of a fresh-box run, over dst where the box directory is mounted: a
 * tmpfs of the box's size on dst, an upper and a work directory in it, then on the same point,
 * covering both, the overlay of the box's mount (the lower layer, named through a descriptor
 * taken before it was covered) and the upper directory. overlayfs takes only layers that are
 * mounts of the caller's own namespace (it clones them privately), so the box is first mounted
 * in the run's tree as for any run, and the tmpfs is mounted there too. All three live in the
 * run's mount namespace only and vanish with it: a killed run leaves nothing on the host to
 * clean. The root of the overlay is the upper directory: owned by the box's user, mode 0755,
 * as a box directory is. */
static int mount_fresh_box(const struct root_plan *p, const char *dst, struct ev_err *err)
{
    cleanup_close int lower_fd = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (lower_fd < 0)
        return ev_fail(err, errno, "open %s", dst);
    char opts[1700], upper[520], work[520];
    snprintf(opts, sizeof(opts), "size=%lluk,nr_inodes=%llu,mode=0700",
             (unsigned long long)p->box_kb, (unsigned long long)p->box_inodes + 2);
    if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return ev_fail(err, errno, "mount tmpfs on %s (%s)", dst, opts);
    snprintf(upper, sizeof(upper), "%s/upper", dst);
    snprintf(work, sizeof(work), "%s/work", dst);
    if (mkdir(upper, 0755) < 0 || chown(upper, p->uid, p->gid) < 0 || chmod(upper, 0755) < 0 ||
        mkdir(work, 0700) < 0)
        return ev_fail(err, errno, "the upper layer of /box in %s", dst);
    int n = snprintf(opts, sizeof(opts), "lowerdir=/proc/self/fd/%d,upperdir=%s,workdir=%s",
                     lower_fd, upper, work);
    if (n < 0 || (size_t)n >= sizeof(opts))
        return ev_fail(err, ENAMETOOLONG, "overlay on %s", dst);
    if (mount("overlay", dst, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
        return ev_fail(err, errno, "overlay of %s on %s", p->box_dir, dst);
    return 0;
}

/* Copies each of the run's files into the fresh /box at dir (into its upper layer), owned by
 * root and read-only: the program reads them, cannot write them, and the caller's bytes are
 * never within its reach. A name an earlier run left in the box is replaced. The box's tmpfs
 * bounds what is copied; pread leaves the caller's offset alone. */
static int add_files(const struct root_plan *p, const char *dir, struct ev_err *err)
{
    if (!p->n_files)
        return 0;
    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ev_fail(err, errno, "open %s", dir);
    for (size_t i = 0; i < p->n_files; i++) {
        const char *name = p->files[i].name;
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
            return ev_fail(err, errno, "file %s: what the box has of that name", name);
        cleanup_close int fd =
            openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
        if (fd < 0)
            return ev_fail(err, errno, "create %s in /box", name);
        char buf[16384];
        off_t off = 0;
        for (;;) {
            ssize_t r = pread(p->files[i].fd, buf, sizeof(buf), off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return ev_fail(err, errno, "read the contents of %s", name);
            if (r == 0)
                break;
            if (write_full(fd, buf, (size_t)r) < 0)
                return ev_fail(err, errno, "write %s in /box", name);
            off += r;
        }
        if (fchmod(fd, 0444) < 0) /* whatever the umask */
            return ev_fail(err, errno, "chmod %s", name);
    }
    return 0;
}

int mounts_build_root(const struct root_plan *p, struct ev_err *err)
{
    const char *root = p->host->root_dir;
    char path[512];
    if (build_base(p, root, err) < 0)
        return -1;
    for (size_t i = 0; i < p->n_mounts; i++) {
        snprintf(path, sizeof(path), "%s%s", root, p->mounts[i].target);
        if (overlay_extra(p, &p->mounts[i], path, err) < 0)
            return -1;
    }
    if (make_tree_read_only(p, root, err) < 0 || build_dev(root, err) < 0 ||
        mount_proc_and_tmp(p, root, err) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/box", root);
    if (bind_with_flags(p->box_dir, path, MS_NOSUID | MS_NODEV, err) < 0)
        return -1;
    if (p->fresh_box && (mount_fresh_box(p, path, err) < 0 || add_files(p, path, err) < 0))
        return -1;
    return switch_root(p, root, err);
}

/* ---- prepared roots ------------------------------------------------------------------------ */

int mounts_build_template(const struct root_plan *p, struct ev_err *err)
{
    const char *root = p->host->root_dir;
    if (build_base(p, root, err) < 0 || make_tree_read_only(p, root, err) < 0 ||
        build_dev(root, err) < 0)
        return -1;
    return switch_root(p, root, err);
}

/* A detached copy of the mount at `path` (not of what is mounted below it), with `attr`. */
static int clone_mount(const char *path, uint64_t attr, struct ev_err *err)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (fd < 0)
        return ev_fail(err, errno, "bind %s", path);
    struct mount_attr a = {.attr_set = attr};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0) {
        int e = errno;
        close(fd);
        return ev_fail(err, e, "set the flags of the bind of %s", path);
    }
    return fd;
}

/* overlay_extra's overlay, made with the mount API as a detached mount (see clone_mount). */
static int detached_overlay(const struct root_plan *p, const struct sbx_mount *m,
                            struct ev_err *err)
{
    int src = open_extra(m, err);
    if (src < 0)
        return -1;
    char lower[400];
    snprintf(lower, sizeof(lower), "/proc/self/fd/%d:%s", src, p->host->empty_dir);
    int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    int mnt = -1, e = errno;
    if (fs >= 0 && syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir", lower, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                           MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        e = errno;
    if (fs >= 0)
        close(fs);
    close(src);
    if (mnt < 0)
        return ev_fail(err, e, "overlay of %s", m->source);
    return mnt;
}

static int attach(int fd, const char *target, struct ev_err *err)
{
    int r = (int)syscall(SYS_move_mount, fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    int e = errno;
    close(fd);
    return r < 0 ? ev_fail(err, e, "mount on %s", target) : 0;
}

int mounts_enter_template(const struct root_plan *p, int template_fd, struct ev_err *err)
{
    /* What the run binds from the host is taken before the host's tree is out of sight. */
    int box_fd = clone_mount(p->box_dir, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, err);
    if (box_fd < 0)
        return -1;
    int fds[SBX_MAX_MOUNTS];
    size_t n = 0;
    int rc = -1;
    for (; n < p->n_mounts; n++) {
        fds[n] = detached_overlay(p, &p->mounts[n], err);
        if (fds[n] < 0)
            goto out;
    }
    /* A private copy of the prepared tree: what this run mounts stays in its copy. */
    if (setns(template_fd, CLONE_NEWNS) < 0) {
        ev_fail(err, errno, "enter the prepared root");
        goto out;
    }
    if (unshare(CLONE_NEWNS) < 0) {
        ev_fail(err, errno, "copy the prepared root");
        goto out;
    }
    if (mount_proc_and_tmp(p, "", err) < 0)
        goto out;
    rc = attach(box_fd, "/box", err);
    box_fd = -1;
    if (rc == 0 && p->fresh_box) {
        /* /proc is the box's own by now: /proc/self/fd names this process's descriptors */
        rc = mount_fresh_box(p, "/box", err);
        if (rc == 0)
            rc = add_files(p, "/box", err);
    }
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = attach(fds[i], p->mounts[i].target, err);
        else
            close(fds[i]);
    }
    n = 0;
    if (rc == 0 && chdir("/") < 0)
        rc = ev_fail(err, errno, "chdir /");
out:
    if (box_fd >= 0)
        close(box_fd);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    return rc;
}
