/* libFuzzer target: the privileged helper's validation of a message from the unprivileged
 * server (ps_check_request). The first byte is the number of descriptors that came with the
 * message; the rest is the datagram, in a PS_MAX_MSG buffer as the helper receives it. What
 * the check accepts is then used as the helper uses it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/filename.h"
#include "privsep/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > PS_MAX_MSG)
        return 0;
    struct ps_request *req = malloc(PS_MAX_MSG);
    if (!req)
        return 0;
    memcpy(req, data + 1, size - 1);
    char *argv[PS_MAX_ARGS + 1], *envp[PS_MAX_ENV + 1];
    struct ev_err err = {0};
    int rc = ps_check_request(req, size - 1, data[0] % (PS_MAX_FDS + 2), argv, envp, &err);
    if (rc < 0 && err.msg[0] == '\0')
        abort(); /* a refusal always says why */
    if (rc == 0 && req->h.type == PS_RUN) {
        size_t total = 0;
        for (char **a = argv; *a; a++)
            total += strlen(*a);
        for (char **e = envp; *e; e++) {
            if (!strchr(*e, '='))
                abort();
            total += strlen(*e);
        }
        if (total > size)
            abort();
        /* the descriptors that came are those announced; the files' names are plain */
        if (ps_run_fd_count(&req->u.run) != data[0] % (PS_MAX_FDS + 2) ||
            req->u.run.n_files > PS_MAX_FILES)
            abort();
        for (uint32_t i = 0; i < req->u.run.n_files; i++)
            if (!plain_file_name(req->u.run.files[i]))
                abort();
    }
    free(req);
    return 0;
}
