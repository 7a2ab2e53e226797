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
/* Sessions open now, from the hand-over of the socket to the end of the session (/metrics). A
 * count of the process, not of a hub: /metrics may be answered while the hub stops. */
unsigned ws_open_sessions(void);

/* The Sec-WebSocket-Accept value of a Sec-WebSocket-Key (RFC 6455 §4.2.2): 28 characters. */
void ws_accept_key(const char *key, char out[29]);

struct ws_session;

/* Checks the handshake of rq (Upgrade, Connection, Sec-WebSocket-Version 13, a 16-byte
 * Sec-WebSocket-Key) and queues the 101 answer; the hub takes the socket once it is sent.
 * need_token: no API key came in the headers and the server has keys, so init must carry one.
 * Returns false with a 4xx in r when the handshake is not one. On true, *pending is the
 * session until libmicrohttpd sends the 101 and hands the socket over, which sets *pending to
 * NULL; a connection that ends before that (the client left first) never reaches the hub, and
 * libmicrohttpd's request-completed notification, which comes after the hand-over if there is
 * one, gives a *pending still set to ws_upgrade_abandon. */
bool ws_upgrade(struct ws_hub *h, struct MHD_Connection *conn, const struct request *rq,
                bool need_token, struct ws_session **pending, struct reply *r);
void ws_upgrade_abandon(struct ws_session *s);

#endif
