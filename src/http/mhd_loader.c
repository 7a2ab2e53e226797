/* libmicrohttpd, loaded on first use (common/lazylib.h): Debian's libmicrohttpd pulls in
 * GnuTLS, nettle, gmp, p11-kit and more; loading them and running their constructors costs
 * about 3 ms of CPU at every start of the binary (measured with `perf stat ./build/envicutor
 * --help`: 4.2 ms linked, 0.7 ms for /bin/true), a cost every `envicutor sandbox` would pay
 * for a library it never uses. `envicutor serve` calls mhd_load() at start to report a
 * missing library clearly. */
#include "http/mhd_loader.h"

#include <stdarg.h>

#include "common/lazylib.h"

#define FUNCTIONS(F, V, N)                                                                         \
    F(struct MHD_Daemon *, MHD_start_daemon_va,                                                    \
      (unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc, void *apc_cls,             \
       MHD_AccessHandlerCallback dh, void *dh_cls, va_list ap),                                    \
      (flags, port, apc, apc_cls, dh, dh_cls, ap))                                                 \
    V(MHD_stop_daemon, (struct MHD_Daemon * d), (d))                                               \
    F(enum MHD_Result, MHD_add_connection,                                                         \
      (struct MHD_Daemon * d, MHD_socket s, const struct sockaddr *addr, socklen_t len),           \
      (d, s, addr, len))                                                                           \
    F(const char *, MHD_lookup_connection_value,                                                   \
      (struct MHD_Connection * c, enum MHD_ValueKind kind, const char *key), (c, kind, key))       \
    F(enum MHD_Result, MHD_queue_response,                                                         \
      (struct MHD_Connection * c, unsigned int status, struct MHD_Response *r), (c, status, r))    \
    F(struct MHD_Response *, MHD_create_response_from_buffer,                                      \
      (size_t size, void *buf, enum MHD_ResponseMemoryMode mode), (size, buf, mode))               \
    F(struct MHD_Response *, MHD_create_response_from_fd64, (uint64_t size, int fd), (size, fd))   \
    V(MHD_destroy_response, (struct MHD_Response * r), (r))                                        \
    F(enum MHD_Result, MHD_add_response_header,                                                    \
      (struct MHD_Response * r, const char *header, const char *content), (r, header, content))    \
    V(MHD_suspend_connection, (struct MHD_Connection * c), (c))                                    \
    V(MHD_resume_connection, (struct MHD_Connection * c), (c))                                     \
    F(struct MHD_Response *, MHD_create_response_for_upgrade, (MHD_UpgradeHandler h, void *cls),   \
      (h, cls))                                                                                    \
    N(MHD_get_connection_info)                                                                     \
    N(MHD_upgrade_action)

LAZY_LIBRARY("libmicrohttpd.so.12", FUNCTIONS)

int mhd_load(struct ev_err *err)
{
    return lazy_lib_load(&lazy_this, err);
}

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = MHD_start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

/* Only the info types that take no further argument are used by the server. */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
    return LAZY_FN(const union MHD_ConnectionInfo *(*)(struct MHD_Connection *,
                                                       enum MHD_ConnectionInfoType, ...),
                   MHD_get_connection_info)(connection, info_type);
}

/* Only the actions that take no further argument (close, cork on and off) exist. */
enum MHD_Result MHD_upgrade_action(struct MHD_UpgradeResponseHandle *urh,
                                   enum MHD_UpgradeAction action, ...)
{
    return LAZY_FN(
        enum MHD_Result(*)(struct MHD_UpgradeResponseHandle *, enum MHD_UpgradeAction, ...),
        MHD_upgrade_action)(urh, action);
}
