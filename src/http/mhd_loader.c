/* libmicrohttpd, loaded when the server first needs it rather than when the binary starts.
 *
 * Debian's libmicrohttpd pulls in GnuTLS, nettle, gmp, p11-kit and more; loading them and
 * running their constructors costs about 3 ms of CPU at every start of the binary (measured
 * with `perf stat ./build/envicutor --help`: 4.2 ms linked, 0.7 ms for /bin/true), a cost
 * every `envicutor sandbox` would pay for a library it never uses. So the binary is not
 * linked against it: these definitions of the few functions the HTTP layer calls resolve the
 * real ones with dlopen/dlsym on first use. `envicutor serve` calls mhd_load() at start to
 * report a missing library clearly. */
#include "http/mhd_loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define MHD_SONAME "libmicrohttpd.so.12"

static struct {
    void *lib;
    char error[256];
    struct MHD_Daemon *(*start_daemon_va)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                                          MHD_AccessHandlerCallback, void *, va_list);
    void (*stop_daemon)(struct MHD_Daemon *);
    enum MHD_Result (*add_connection)(struct MHD_Daemon *, MHD_socket, const struct sockaddr *,
                                      socklen_t);
    const char *(*lookup_connection_value)(struct MHD_Connection *, enum MHD_ValueKind,
                                           const char *);
    enum MHD_Result (*queue_response)(struct MHD_Connection *, unsigned int, struct MHD_Response *);
    struct MHD_Response *(*create_response_from_buffer)(size_t, void *,
                                                        enum MHD_ResponseMemoryMode);
    struct MHD_Response *(*create_response_from_fd64)(uint64_t, int);
    void (*destroy_response)(struct MHD_Response *);
    enum MHD_Result (*add_response_header)(struct MHD_Response *, const char *, const char *);
    const union MHD_ConnectionInfo *(*get_connection_info)(struct MHD_Connection *,
                                                           enum MHD_ConnectionInfoType, ...);
    void (*suspend_connection)(struct MHD_Connection *);
    void (*resume_connection)(struct MHD_Connection *);
    struct MHD_Response *(*create_response_for_upgrade)(MHD_UpgradeHandler, void *);
    enum MHD_Result (*upgrade_action)(struct MHD_UpgradeResponseHandle *, enum MHD_UpgradeAction,
                                      ...);
} mhd;

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *symbol(const char *name)
{
    void *p = mhd.lib ? dlsym(mhd.lib, name) : NULL;
    if (!p && !mhd.error[0])
        snprintf(mhd.error, sizeof(mhd.error), "%s: no symbol %s", MHD_SONAME, name);
    return p;
}

static void load(void)
{
    mhd.lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!mhd.lib) {
        const char *e = dlerror();
        snprintf(mhd.error, sizeof(mhd.error), "%s", e ? e : MHD_SONAME ": cannot be loaded");
        return;
    }
    mhd.start_daemon_va = symbol("MHD_start_daemon_va");
    mhd.stop_daemon = symbol("MHD_stop_daemon");
    mhd.add_connection = symbol("MHD_add_connection");
    mhd.lookup_connection_value = symbol("MHD_lookup_connection_value");
    mhd.queue_response = symbol("MHD_queue_response");
    mhd.create_response_from_buffer = symbol("MHD_create_response_from_buffer");
    mhd.create_response_from_fd64 = symbol("MHD_create_response_from_fd64");
    mhd.destroy_response = symbol("MHD_destroy_response");
    mhd.add_response_header = symbol("MHD_add_response_header");
    mhd.get_connection_info = symbol("MHD_get_connection_info");
    mhd.suspend_connection = symbol("MHD_suspend_connection");
    mhd.resume_connection = symbol("MHD_resume_connection");
    mhd.create_response_for_upgrade = symbol("MHD_create_response_for_upgrade");
    mhd.upgrade_action = symbol("MHD_upgrade_action");
}

int mhd_load(struct ev_err *err)
{
    pthread_once(&once, load);
    if (mhd.error[0])
        return ev_fail(err, 0, "the HTTP library: %s", mhd.error);
    return 0;
}

/* Past a successful mhd_load() every pointer is set; without it (or after a failed load)
 * these abort with the reason rather than jump to NULL. */
static void need(void)
{
    pthread_once(&once, load);
    if (mhd.error[0]) {
        fprintf(stderr, "envicutor: the HTTP library: %s\n", mhd.error);
        abort();
    }
}

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    need();
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = mhd.start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
    need();
    mhd.stop_daemon(daemon);
}

enum MHD_Result MHD_add_connection(struct MHD_Daemon *daemon, MHD_socket client_socket,
                                   const struct sockaddr *addr, socklen_t addrlen)
{
    need();
    return mhd.add_connection(daemon, client_socket, addr, addrlen);
}

const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                                        const char *key)
{
    need();
    return mhd.lookup_connection_value(connection, kind, key);
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                                   struct MHD_Response *response)
{
    need();
    return mhd.queue_response(connection, status_code, response);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    need();
    return mhd.create_response_from_buffer(size, buffer, mode);
}

struct MHD_Response *MHD_create_response_from_fd64(uint64_t size, int fd)
{
    need();
    return mhd.create_response_from_fd64(size, fd);
}

void MHD_destroy_response(struct MHD_Response *response)
{
    need();
    mhd.destroy_response(response);
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header,
                                        const char *content)
{
    need();
    return mhd.add_response_header(response, header, content);
}

/* Only the info types that take no further argument are used by the server. */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
    need();
    return mhd.get_connection_info(connection, info_type);
}

void MHD_suspend_connection(struct MHD_Connection *connection)
{
    need();
    mhd.suspend_connection(connection);
}

void MHD_resume_connection(struct MHD_Connection *connection)
{
    need();
    mhd.resume_connection(connection);
}

struct MHD_Response *MHD_create_response_for_upgrade(MHD_UpgradeHandler upgrade_handler,
                                                     void *upgrade_handler_cls)
{
    need();
    return mhd.create_response_for_upgrade(upgrade_handler, upgrade_handler_cls);
}

/* Only the actions that take no further argument (close, cork on and off) exist. */
enum MHD_Result MHD_upgrade_action(struct MHD_UpgradeResponseHandle *urh,
                                   enum MHD_UpgradeAction action, ...)
{
    need();
    return mhd.upgrade_action(urh, action);
}
