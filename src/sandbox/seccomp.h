/* The syscall filter: defence in depth behind namespaces, uids and no_new_privs. */
#ifndef ENVICUTOR_SECCOMP_H
#define ENVICUTOR_SECCOMP_H

#include "common/error.h"

/* Compiles the filter into a malloc'ed array of struct sock_filter, so that a child process
 * (possibly of a multi-threaded server) only has to install it with one prctl. */
int seccomp_build(void **bpf, unsigned short *len, struct ev_err *err);

#endif
