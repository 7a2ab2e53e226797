/* wslay, loaded on first use (common/lazylib.h): WebSocket framing for /execute/ws. */
#include <wslay/wslay.h>

#include "common/lazylib.h"

#define FUNCTIONS(F, V, N)                                                                         \
    F(int, wslay_event_context_server_init,                                                        \
      (wslay_event_context_ptr * ctx, const struct wslay_event_callbacks *cb, void *user),         \
      (ctx, cb, user))                                                                             \
    V(wslay_event_context_free, (wslay_event_context_ptr ctx), (ctx))                              \
    V(wslay_event_config_set_max_recv_msg_length, (wslay_event_context_ptr ctx, uint64_t n),       \
      (ctx, n))                                                                                    \
    F(int, wslay_event_recv, (wslay_event_context_ptr ctx), (ctx))                                 \
    F(int, wslay_event_send, (wslay_event_context_ptr ctx), (ctx))                                 \
    F(int, wslay_event_queue_msg, (wslay_event_context_ptr ctx, const struct wslay_event_msg *m),  \
      (ctx, m))                                                                                    \
    F(int, wslay_event_queue_close,                                                                \
      (wslay_event_context_ptr ctx, uint16_t code, const uint8_t *reason, size_t len),             \
      (ctx, code, reason, len))                                                                    \
    V(wslay_event_set_error, (wslay_event_context_ptr ctx, int val), (ctx, val))                   \
    F(int, wslay_event_want_read, (wslay_event_context_ptr ctx), (ctx))                            \
    F(int, wslay_event_want_write, (wslay_event_context_ptr ctx), (ctx))                           \
    F(int, wslay_event_get_close_sent, (wslay_event_context_ptr ctx), (ctx))                       \
    F(size_t, wslay_event_get_queued_msg_count, (wslay_event_context_ptr ctx), (ctx))              \
    F(size_t, wslay_event_get_queued_msg_length, (wslay_event_context_ptr ctx), (ctx))

LAZY_LIBRARY("libwslay.so.1", FUNCTIONS)

int wslay_load(struct ev_err *err)
{
    return lazy_lib_load(&lazy_this, err);
}
