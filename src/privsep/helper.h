/* The privileged helper: the only part of the server that keeps root. It owns every sandbox
 * operation and nothing else; the unprivileged server asks for them over a socket pair (see
 * protocol.h). Each request runs on a thread of its own, so stages of different submissions
 * run in parallel. */
#ifndef ENVICUTOR_HELPER_H
#define ENVICUTOR_HELPER_H

#include "sandbox/sandbox.h"

/* How `envicutor serve` starts the helper: it execs its own binary again as `envicutor
 * privileged-helper RUNTIMES_DIR`, with its end of the socket pair on descriptor HELPER_FD. */
#define HELPER_COMMAND "privileged-helper"
#define HELPER_FD 3

/* The helper process, from its command line (argv[0] the command, argv[1] RUNTIMES_DIR):
 * refuses to run unless started as serve starts it (root, the socket on HELPER_FD), prepares
 * the sandbox host (network namespaces and prepared roots made ahead) and Nix, serves with
 * helper_main and returns the process's exit status. */
int helper_process_main(int argc, char **argv);

/* Serves requests on sock until the other end closes it, then cancels every run, closes every
 * box and returns 0 (or 1 after an error on the socket). runtimes_dir is the directory whose
 * subdirectories PS_RUN may mount at /runtime. */
int helper_main(struct sbx_host *host, int sock, const char *runtimes_dir);

#endif
