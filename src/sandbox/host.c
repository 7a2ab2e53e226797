/* What the sandbox learns about the host once: cgroup layout, the seccomp program, the /etc
 * entries to show, and the directories it works in. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "sandbox/mounts.h"
#include "sandbox/sandbox.h"
#include "sandbox/roots.h"
#include "sandbox/seccomp.h"

void sbx_limits_default(struct sbx_limits *l)
{
    *l = (struct sbx_limits){
        .wall_time_us = 60 * 1000000ull,
        .cpu_time_us = 30 * 1000000ull,
        .extra_time_us = 5 * 1000000ull,
        .memory_kb = 1000000,
        .max_open_files = 64,
        .max_file_size_kb = 100000,
        .max_processes = 64,
        .stack_kb = 0,
        .max_output_bytes = 16u << 20,
        .tmp_kb = 65536,
    };
}

/* The host's own directories: a name already there must be a directory owned by root (not a
 * link another user planted), and gets the mode asked for whatever it had. */
static int make_root_dir(const char *path, mode_t mode, struct ev_err *err)
{
    if (make_dir(path, mode, err) < 0)
        return -1;
    struct stat st;
    if (lstat(path, &st) < 0)
        return ev_fail(err, errno, "stat %s", path);
    if (!S_ISDIR(st.st_mode) || st.st_uid != 0)
        return ev_fail(err, 0, "%s must be a directory owned by root", path);
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0)
        return ev_fail(err, errno, "chmod %s", path);
    return 0;
}

static int host_init(struct sbx_host *host, const struct sbx_host_config *cfg, struct ev_err *err)
{
    if (geteuid() != 0)
        return ev_fail(err, 0,
                       "the sandbox must run as root (it creates namespaces, cgroups "
                       "and mounts); run it with sudo or as root");
    const char *run_dir = cfg && cfg->run_dir ? cfg->run_dir : "/run/envicutor";
    if (run_dir[0] != '/' || strlen(run_dir) > 200)
        return ev_fail(err, 0, "run directory '%s' must be an absolute path of at most 200 bytes",
                       run_dir);
    /* run_dir is part of overlay mount options, where ':' and ',' are separators */
    if (strpbrk(run_dir, ":,\\"))
        return ev_fail(err, 0, "run directory '%s' may not contain ':', ',' or '\\'", run_dir);
    snprintf(host->run_dir, sizeof(host->run_dir), "%s", run_dir);
    snprintf(host->empty_dir, sizeof(host->empty_dir), "%s/empty", run_dir);
    const char *etc_dir = cfg && cfg->etc_dir ? cfg->etc_dir : "/etc";
    if (etc_dir[0] != '/' || strlen(etc_dir) >= sizeof(host->etc_dir) || strpbrk(etc_dir, ":,\\"))
        return ev_fail(err, 0, "/etc directory '%s' must be an absolute path without ':' or ','",
                       etc_dir);
    snprintf(host->etc_dir, sizeof(host->etc_dir), "%s", etc_dir);
    snprintf(host->root_dir, sizeof(host->root_dir), "%s/root", run_dir);
    const char *lock_dir = cfg && cfg->lock_dir ? cfg->lock_dir : "/run/envicutor/locks";
    if (lock_dir[0] != '/' || strlen(lock_dir) > 200)
        return ev_fail(err, 0, "lock directory '%s' must be an absolute path of at most 200 bytes",
                       lock_dir);
    snprintf(host->lock_dir, sizeof(host->lock_dir), "%s", lock_dir);
    host->log = cfg ? cfg->log : NULL;
    host->log_ctx = cfg ? cfg->log_ctx : NULL;
    if (cfg && cfg->netns_ahead &&
        netns_pool_start(&host->netns, cfg->netns_ahead, host->log, host->log_ctx, err) < 0)
        return -1;
    host->first_uid = cfg && cfg->first_uid ? cfg->first_uid : 60000;
    host->n_boxes = cfg && cfg->n_boxes ? cfg->n_boxes : 1000;
    /* Concurrent owners start their searches at different places, and so rarely race for
     * the same lock; each search of this owner starts one box further on. */
    host->next_box = (unsigned)getpid();
    host->box_bad = calloc(host->n_boxes, 1);
    if (!host->box_bad)
        return ev_fail(err, ENOMEM, "box table");

    char path[320];
    if (make_root_dir(run_dir, 0711, err) < 0)
        return -1;
    const char *subdirs[] = {"boxes", "root"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", run_dir, subdirs[i]);
        if (make_root_dir(path, 0700, err) < 0)
            return -1;
    }
    /* root's alone (run_dir is 0711 and root's), so it stays empty */
    if (make_root_dir(host->empty_dir, 0555, err) < 0)
        return -1;
    /* the lock directory's parent too, when it is not under run_dir (the default's is
     * /run/envicutor) */
    snprintf(path, sizeof(path), "%s", lock_dir);
    char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        *slash = '\0';
        if (make_root_dir(path, 0711, err) < 0)
            return -1;
    }
    if (make_root_dir(lock_dir, 0700, err) < 0)
        return -1;
    if (cg_host_detect(&host->cg, err) < 0)
        return -1;
    if (seccomp_build(&host->bpf, &host->bpf_len, err) < 0)
        return -1;
    /* With a bad descriptor the call fails at once: EBADF when it exists, ENOSYS when not. */
    host->have_mount_setattr =
        syscall(SYS_mount_setattr, -1, "", 0, NULL, 0) < 0 && errno != ENOSYS;
    if (mounts_scan_host(host, err) < 0)
        return -1;
    /* open_tree, move_mount and mount_setattr come with it (Linux 5.12) */
    if (cfg && cfg->prepared_root_points && host->have_mount_setattr &&
        roots_new(&host->roots, cfg->prepared_root_points, err) < 0)
        return -1;
    return 0;
}

int sbx_host_init(struct sbx_host *host, const struct sbx_host_config *cfg, struct ev_err *err)
{
    memset(host, 0, sizeof(*host));
    if (host_init(host, cfg, err) < 0) {
        sbx_host_free(host);
        return -1;
    }
    return 0;
}

int sbx_host_cleanup(struct sbx_host *host, struct ev_err *err)
{
    return cg_host_cleanup(&host->cg, host->lock_dir, err);
}

void sbx_host_free(struct sbx_host *host)
{
    free(host->bpf);
    host->bpf = NULL;
    netns_pool_stop(host->netns);
    host->netns = NULL;
    roots_free(host->roots);
    host->roots = NULL;
    free(host->box_bad);
    host->box_bad = NULL;
}

void sbx_result_free(struct sbx_result *res)
{
    free(res->out.data);
    free(res->err.data);
    res->out.data = res->err.data = NULL;
}

const char *sbx_status_name(enum sbx_status s)
{
    switch (s) {
    case SBX_RE:
        return "RE";
    case SBX_SG:
        return "SG";
    case SBX_TO:
        return "TO";
    case SBX_XX:
        return "XX";
    default:
        return NULL;
    }
}
