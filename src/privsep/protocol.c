#include "privsep/protocol.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "common/filename.h"
#include "common/request_id.h"

static int runtime_name_ok(const char *s)
{
    size_t n = strnlen(s, PS_RUNTIME_MAX);
    if (n == PS_RUNTIME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    return 1;
}

static int check_limits(const struct ps_limits *l, struct ev_err *err)
{
    struct {
        const char *name;
        uint64_t v, min, max;
    } checks[] = {
        {"wall_time", l->wall_time_us, 1, PS_MAX_SECONDS_US},
        {"cpu_time", l->cpu_time_us, 1, PS_MAX_SECONDS_US},
        {"extra_time", l->extra_time_us, 0, PS_MAX_SECONDS_US},
        {"memory", l->memory_kb, 1, PS_MAX_KB},
        {"max_open_files", l->max_open_files, 1, PS_MAX_COUNT},
        {"max_file_size", l->max_file_size_kb, 1, PS_MAX_KB},
        {"max_number_of_processes", l->max_processes, 1, PS_MAX_COUNT},
        {"max_output", l->max_output_bytes, 0, 1ull << 34},
        {"tmp", l->tmp_kb, 4, PS_MAX_KB},
    };
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
        if (checks[i].v < checks[i].min || checks[i].v > checks[i].max)
            return ev_fail(err, 0, "limit %s out of range: %llu", checks[i].name,
                           (unsigned long long)checks[i].v);
    return 0;
}

int ps_check_request(const struct ps_request *req, size_t n, int fd_count, char **argv, char **envp,
                     struct ev_err *err)
{
    if (n < sizeof(req->h))
        return ev_fail(err, 0, "short message (%zu bytes)", n);
    if (req->h.magic != PS_MAGIC)
        return ev_fail(err, 0, "bad magic %#x (another version of envicutor?)", req->h.magic);
    size_t fixed = offsetof(struct ps_request, u);
    switch (req->h.type) {
    case PS_OPEN_BOX:
        if (n != fixed + sizeof(req->u.open) || fd_count != 0)
            return ev_fail(err, 0, "malformed open-box message");
        if (req->u.open.disk_kb < 64 || req->u.open.disk_kb > PS_MAX_KB ||
            req->u.open.max_inodes < 16 || req->u.open.max_inodes > (1ull << 31))
            return ev_fail(err, 0, "box size out of range");
        return 0;
    case PS_WRITE_FILE:
        if (n != fixed + sizeof(req->u.write) || fd_count != 1)
            return ev_fail(err, 0, "malformed write-file message");
        if (memchr(req->u.write.name, 0, sizeof(req->u.write.name)) == NULL ||
            !plain_file_name(req->u.write.name))
            return ev_fail(err, 0, "write-file: not a plain file name");
        if (req->u.write.mode & ~0755u)
            return ev_fail(err, 0, "write-file: mode %o not allowed", req->u.write.mode);
        return 0;
    case PS_CANCEL:
    case PS_CLOSE_BOX:
        if (n != sizeof(req->h) && n != fixed)
            return ev_fail(err, 0, "malformed message of type %u", req->h.type);
        if (fd_count != 0)
            return ev_fail(err, 0, "unexpected descriptor");
        return 0;
    case PS_SIGNAL:
        if (n != fixed + sizeof(req->u.sig) || fd_count != 0)
            return ev_fail(err, 0, "malformed signal message");
        if (req->u.sig.signal != SIGKILL && req->u.sig.signal != SIGTERM &&
            req->u.sig.signal != SIGINT)
            return ev_fail(err, 0, "signal: %u is not allowed", req->u.sig.signal);
        return 0;
    case PS_NIX_INSTALL:
    case PS_NIX_UPDATE:
    case PS_NIX_GC:
        if (n != fixed + sizeof(req->u.nix) || fd_count != 0)
            return ev_fail(err, 0, "malformed nix message");
        if (memchr(req->u.nix.runtime, 0, sizeof(req->u.nix.runtime)) == NULL ||
            !runtime_name_ok(req->u.nix.runtime))
            return ev_fail(err, 0, "nix: bad runtime directory name");
        /* an installation names its runtime; the others name none */
        if ((req->h.type == PS_NIX_INSTALL) != (req->u.nix.runtime[0] != '\0'))
            return ev_fail(err, 0, "nix: a runtime directory is required for an installation only");
        if (req->u.nix.timeout_s < 1 || req->u.nix.timeout_s > PS_MAX_NIX_TIMEOUT)
            return ev_fail(err, 0, "nix: timeout out of range: %u", req->u.nix.timeout_s);
        return 0;
    case PS_RUN:
        break;
    default:
        return ev_fail(err, 0, "unknown message type %u", req->h.type);
    }
    const struct ps_run *r = &req->u.run;
    size_t head = fixed + sizeof(*r);
    if (n < head || r->strings_len != n - head)
        return ev_fail(err, 0, "malformed run message");
    if (r->has_stdin > 1 || r->n_files > PS_MAX_FILES)
        return ev_fail(err, 0, "malformed run message");
    if (r->flags & ~PS_RUN_FLAGS)
        return ev_fail(err, 0, "run: unknown flags %#x", r->flags);
    if (fd_count != ps_run_fd_count(r))
        return ev_fail(err, 0, "run: descriptor count does not match");
    if (r->n_files && !(r->flags & PS_RUN_FRESH_BOX))
        return ev_fail(err, 0, "run: files are for a fresh box only");
    for (uint32_t i = 0; i < r->n_files; i++) {
        if (memchr(r->files[i], 0, sizeof(r->files[i])) == NULL || !plain_file_name(r->files[i]))
            return ev_fail(err, 0, "run: file %u: not a plain file name", i);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(r->files[i], r->files[j]) == 0)
                return ev_fail(err, 0, "run: file %s given twice", r->files[i]);
    }
    if (r->argc < 1 || r->argc > PS_MAX_ARGS || r->envc > PS_MAX_ENV)
        return ev_fail(err, 0, "run: %u arguments and %u variables", r->argc, r->envc);
    if (memchr(r->runtime, 0, sizeof(r->runtime)) == NULL || !runtime_name_ok(r->runtime))
        return ev_fail(err, 0, "run: bad runtime directory name");
    if (memchr(r->request_id, 0, sizeof(r->request_id)) == NULL ||
        (r->request_id[0] && !request_id_valid(r->request_id)))
        return ev_fail(err, 0, "run: bad request id");
    if (check_limits(&r->limits, err) < 0)
        return -1;
    const char *p = (const char *)req + head, *end = p + r->strings_len;
    for (uint32_t i = 0; i < r->argc + r->envc; i++) {
        const char *nul = p < end ? memchr(p, 0, (size_t)(end - p)) : NULL;
        if (!nul)
            return ev_fail(err, 0, "run: string %u is not NUL-terminated", i);
        if (i < r->argc) {
            argv[i] = (char *)p;
        } else {
            const char *eq = strchr(p, '=');
            if (!eq || eq == p)
                return ev_fail(err, 0, "run: environment entry %u is not NAME=VALUE", i - r->argc);
            envp[i - r->argc] = (char *)p;
        }
        p = nul + 1;
    }
    if (p != end)
        return ev_fail(err, 0, "run: %zu trailing bytes", (size_t)(end - p));
    if (!argv[0][0])
        return ev_fail(err, 0, "run: empty command");
    argv[r->argc] = NULL;
    envp[r->envc] = NULL;
    return 0;
}

int ps_run_fd_count(const struct ps_run *r)
{
    return (r->has_stdin ? 1 : 0) + (r->flags & PS_RUN_STDOUT_FD ? 1 : 0) +
           (r->flags & PS_RUN_STDERR_FD ? 1 : 0) + (int)r->n_files;
}

ssize_t ps_send(int sock, const void *msg, size_t len, const int *fds, int n_fds)
{
    struct iovec iov = {(void *)msg, len};
    union {
        char buf[CMSG_SPACE(PS_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n_fds < 0 || n_fds > PS_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    if (n_fds > 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
        memcpy(CMSG_DATA(h), fds, (size_t)n_fds * sizeof(int));
    }
    ssize_t r;
    while ((r = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return r;
}
