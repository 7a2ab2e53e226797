/* GET /execute/ws: a submission over a WebSocket (SPEC §9, docs/websocket.md).
 *
 * libmicrohttpd answers the handshake (ws_handshake checks it) and hands the socket over;
 * from then on one thread, the hub's loop, owns every WebSocket: it reads and writes the frames
 * (libwslay), keeps each waiting session's place in the scheduler's queue (a ticket, no
 * thread), and once a session runs, moves bytes between its socket and its program's pipes.
 * The pipeline itself runs in a thread per running session (at most MAX_CONCURRENT_SUBMISSIONS),
 * which only starts the stages and reports their results to the loop. */
#ifndef ENVICUTOR_WS_H
#define ENVICUTOR_WS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "http/auth.h"
#include "http/reply.h"
#include "http/routes.h"

struct ws_hub;
struct MHD_Connection;

struct ws_hub *ws_hub_start(const struct route_ctx *ctx, const struct auth_keys *auth,
                            struct ev_err *err);
/* Closes every session (1001; a running one is killed first) and waits for their runs. Before
 * libmicrohttpd stops: it must not be stopped with an upgraded socket open. */
void ws_hub_stop(struct ws_hub *h);
/* Sessions open now, and every one since the start (for /metrics). */
unsigned ws_hub_open(struct ws_hub *h);

/* The Sec-WebSocket-Accept value of a Sec-WebSocket-Key (RFC 6455 §4.2.2): 28 characters. */
void ws_accept_key(const char *key, char out[29]);

/* Checks the handshake of rq (Upgrade, Connection, Sec-WebSocket-Version 13, a 16-byte
 * Sec-WebSocket-Key) and queues the 101 answer; the hub takes the socket once it is sent.
 * need_token: no API key came in the headers and the server has keys, so init must carry one.
 * Returns false with a 4xx in r when the handshake is not one. */
bool ws_upgrade(struct ws_hub *h, struct MHD_Connection *conn, const struct request *rq,
                bool need_token, struct reply *r);

#endif
