/* The privileged helper: the only part of the server that keeps root. It owns every sandbox
 * operation and nothing else; the unprivileged server asks for them over a socket pair (see
 * protocol.h). Each request runs on a thread of its own, so stages of different submissions
 * run in parallel. */
#ifndef ENVICUTOR_HELPER_H
#define ENVICUTOR_HELPER_H

#include "sandbox/sandbox.h"

/* Serves requests on sock until the other end closes it, then cancels every run, closes every
 * box and returns 0 (or 1 after an error on the socket). runtimes_dir is the directory whose
 * subdirectories PS_RUN may mount at /runtime. */
int helper_main(struct sbx_host *host, int sock, const char *runtimes_dir);

#endif
