/* The Nix operations of the privileged helper: nix-shell once per installation, the update of
 * Nix, garbage collection. They run as root on the host (Nix's store is root's), never in a
 * box, and never through a shell command line built from a request: the shell.nix is a file
 * in the runtime's directory and every command here is fixed text plus paths the helper
 * builds itself.
 *
 * Each command runs in its own process group and its own cgroup (sandbox/cgroup.h), bounded
 * by a timeout: when it expires, the cgroup is killed as a whole, so a shellHook that loops
 * forever, or that forks a child into a session of its own, cannot outlive the request. */
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

/* Runs nix-shell once on runtimes_dir/name/shell.nix and captures the environment of its
 * shell; on success (exit 0, an environment), adds GC roots for the store paths that the
 * environment names, as symlinks runtimes_dir/name/gcroot* (indirect roots: removing the
 * runtime's directory releases them). -1 only when the helper could not run it at all. */
int nix_install(const struct sbx_host *host, const char *runtimes_dir, const char *name,
                unsigned timeout_s, struct nix_result *res, struct ev_err *err);
/* nix-channel --update, then nix-env -u (the profile's packages, certificates included). */
int nix_update(const struct sbx_host *host, unsigned timeout_s, struct nix_result *res,
               struct ev_err *err);
/* nix-store --gc: removes every store path no GC root keeps. */
int nix_gc(const struct sbx_host *host, unsigned timeout_s, struct nix_result *res,
           struct ev_err *err);

#endif
