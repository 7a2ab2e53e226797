/* The Nix operations of the privileged helper: nix-shell once per installation, the update of
 * Nix, garbage collection. Multi-user Nix: the commands run as the server's unprivileged user
 * and reach the store through a Nix daemon (root, building as the build users) — the one a
 * service manager runs, or, where none answers, one the helper starts and restarts itself.
 * Never in a box, and never through a shell command line built from a request: the shell.nix
 * is a file in the runtime's directory and every command here is fixed text plus paths the
 * helper builds itself. docs/nix.md has the design and its threat analysis.
 *
 * Each command (and the daemon the helper starts) runs in a PID namespace of its own, whose
 * init dies with the command or with the helper (kill -9 included), taking every process of
 * the namespace with it, and in a cgroup of its own (sandbox/cgroup.h), bounded by a timeout.
 * A shellHook that loops forever, or that forks a child into a session of its own, cannot
 * outlive the request or the helper; cgroups a dead helper left are removed at start-up. */
#ifndef ENVICUTOR_NIX_H
#define ENVICUTOR_NIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "sandbox/sandbox.h"

#define NIX_MAX_OUTPUT (1u << 20) /* per stream; the rest is dropped */
#define NIX_MAX_ENV (1u << 20)

struct nix_result {
    int exit_code;   /* -1 when killed */
    bool timed_out;  /* killed because the timeout expired */
    char *out, *err; /* malloc'ed, NUL-terminated */
    size_t out_len, err_len;
    char *env; /* install: NAME=VALUE\0... exactly as nix-shell's shell had it */
    size_t env_len;
};

void nix_result_free(struct nix_result *r);

/* At the helper's start, as root: finds Nix (nothing to do without it), the unprivileged
 * user Nix commands run as, with data_dir/nix-home as their HOME; makes the build users when
 * the host has none, and removes the cgroups of Nix commands of helpers that died. */
int nix_start(const struct sbx_host *host, const char *user, const char *data_dir,
              struct ev_err *err);
/* Kills the Nix commands running now (the server gave up on their request). */
void nix_cancel_running(void);
/* When the helper stops: the same, and refuses new ones. */
void nix_cancel_all(void);
/* At the helper's end: stops the daemon it started, if any. */
void nix_stop(void);

/* Runs nix-shell once on runtimes_dir/name/shell.nix and captures the environment of its
 * shell; on success (exit 0, an environment), adds GC roots for the store paths that the
 * environment names, as symlinks runtimes_dir/name/gcroot* (indirect roots: removing the
 * runtime's directory releases them). -1 only when the helper could not run it at all. */
int nix_install(const char *runtimes_dir, const char *name, unsigned timeout_s,
                struct nix_result *res, struct ev_err *err);
/* nix-channel --update, then nix-env -u (the profile's packages, certificates included). */
int nix_update(unsigned timeout_s, struct nix_result *res, struct ev_err *err);
/* nix-store --gc: removes every store path no GC root keeps. */
int nix_gc(unsigned timeout_s, struct nix_result *res, struct ev_err *err);

#endif
