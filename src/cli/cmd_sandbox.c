/* `envicutor sandbox [options] -- COMMAND [ARGS...]`: one command in a fresh box, one
 * StageResult JSON object on stdout. Exit status 0 when the sandbox did its job, whatever the
 * program did; 2 for a bad option; 1 when the sandbox itself failed. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "format/stage_json.h"
#include "sandbox/sandbox.h"

#define MAX_ENV 256

static const char usage[] =
    "Usage: envicutor sandbox [OPTIONS] -- COMMAND [ARGS...]\n"
    "\n"
    "Runs COMMAND in a fresh box (new PID, mount, IPC, UTS, network and cgroup namespaces;\n"
    "an unprivileged uid of its own; read-only host toolchains; seccomp) and prints one\n"
    "StageResult JSON object: memory (KB), cpu_time and wall_time (s), exit_code,\n"
    "exit_signal, exit_status (null, RE, SG, TO, XX), exit_message, stdout, stderr,\n"
    "memory_limit_exceeded, stdout_truncated, stderr_truncated.\n"
    "\n"
    "Limits (defaults are the server's run-stage defaults):\n"
    "  --wall-time S                elapsed time from execve (60)\n"
    "  --cpu-time S                 CPU time of all processes and threads (30)\n"
    "  --extra-time S               grace before a CPU-time kill; still TO (5)\n"
    "  --memory KB                  memory of the whole run, no swap (1000000)\n"
    "  --max-open-files N           file descriptors per process (64)\n"
    "  --max-file-size KB           size of each file written (100000)\n"
    "  --max-number-of-processes N  processes and threads at once (64)\n"
    "  --stack KB                   stack size per process (default: --memory)\n"
    "  --max-output-size BYTES      captured stdout and stderr, each (16777216)\n"
    "  --tmp-size KB                size of the private /tmp (65536)\n"
    "  --disk-size KB               size of the /box tmpfs (262144)\n"
    "  --max-inodes N               files in the /box tmpfs (16384)\n"
    "\n"
    "Box:\n"
    "  --stdin FILE                 file read as stdin (default: empty)\n"
    "  --box-dir DIR                use DIR as /box instead of a fresh tmpfs; it is chowned\n"
    "                               to the box user, and its size is the caller's concern\n"
    "  --workdir DIR                working directory inside the box (/box)\n"
    "  --mount SRC:DST              extra read-only bind mount (repeatable)\n"
    "  --env NAME=VALUE             environment variable (repeatable); the environment is\n"
    "                               PATH=/usr/local/bin:/usr/bin:/bin, HOME=/tmp,\n"
    "                               LANG=C.UTF-8 plus these, never the caller's own\n"
    "  --info                       print the detected cgroup layout and exit\n"
    "  --cleanup                    remove what killed owners left behind (boxes whose lock\n"
    "                               is free: cgroups, mounts, directories) and exit\n"
    "\n"
    "Environment: ENVICUTOR_RUN_DIR (default /run/envicutor) holds box locks and directories.\n";

enum {
    OPT_WALL = 256,
    OPT_CPU,
    OPT_EXTRA,
    OPT_MEMORY,
    OPT_FILES,
    OPT_FSIZE,
    OPT_PROCS,
    OPT_STACK,
    OPT_OUTPUT,
    OPT_TMP,
    OPT_DISK,
    OPT_INODES,
    OPT_STDIN,
    OPT_BOXDIR,
    OPT_WORKDIR,
    OPT_MOUNT,
    OPT_ENV,
    OPT_CLEANUP,
    OPT_INFO,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"wall-time", required_argument, 0, OPT_WALL},
    {"cpu-time", required_argument, 0, OPT_CPU},
    {"extra-time", required_argument, 0, OPT_EXTRA},
    {"memory", required_argument, 0, OPT_MEMORY},
    {"max-open-files", required_argument, 0, OPT_FILES},
    {"max-file-size", required_argument, 0, OPT_FSIZE},
    {"max-number-of-processes", required_argument, 0, OPT_PROCS},
    {"stack", required_argument, 0, OPT_STACK},
    {"max-output-size", required_argument, 0, OPT_OUTPUT},
    {"tmp-size", required_argument, 0, OPT_TMP},
    {"disk-size", required_argument, 0, OPT_DISK},
    {"max-inodes", required_argument, 0, OPT_INODES},
    {"stdin", required_argument, 0, OPT_STDIN},
    {"box-dir", required_argument, 0, OPT_BOXDIR},
    {"workdir", required_argument, 0, OPT_WORKDIR},
    {"mount", required_argument, 0, OPT_MOUNT},
    {"env", required_argument, 0, OPT_ENV},
    {"info", no_argument, 0, OPT_INFO},
    {"cleanup", no_argument, 0, OPT_CLEANUP},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

#define KB_MAX (1ull << 32) /* 4 TiB in kilobytes: far above any machine, far below overflow */

static int set_env(char **env, size_t *n, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "envicutor sandbox: --env expects NAME=VALUE, got '%s'\n", kv);
        return -1;
    }
    size_t klen = (size_t)(eq - kv) + 1;
    for (size_t i = 0; i < *n; i++) {
        if (strncmp(env[i], kv, klen) == 0) {
            env[i] = (char *)kv;
            return 0;
        }
    }
    if (*n + 1 >= MAX_ENV) {
        fprintf(stderr, "envicutor sandbox: at most %d environment variables\n", MAX_ENV - 1);
        return -1;
    }
    env[(*n)++] = (char *)kv;
    env[*n] = NULL;
    return 0;
}

int cmd_sandbox(int argc, char **argv)
{
    struct sbx_run_config cfg = {0};
    sbx_limits_default(&cfg.limits);
    struct sbx_limits *l = &cfg.limits;
    struct sbx_box_options bopt = {0};
    struct sbx_mount mounts[SBX_MAX_MOUNTS];
    char *env[MAX_ENV] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", NULL};
    size_t n_env = 3;
    bool info = false, cleanup = false;
    struct ev_err err = {0};
    int rc = 0;

    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
        switch (opt) {
        case OPT_WALL:
            rc = parse_seconds("--wall-time", optarg, false, 86400, &l->wall_time_us, &err);
            break;
        case OPT_CPU:
            rc = parse_seconds("--cpu-time", optarg, false, 86400, &l->cpu_time_us, &err);
            break;
        case OPT_EXTRA:
            rc = parse_seconds("--extra-time", optarg, true, 86400, &l->extra_time_us, &err);
            break;
        case OPT_MEMORY:
            rc = parse_count("--memory", optarg, 1024, KB_MAX, &l->memory_kb, &err);
            break;
        case OPT_FILES:
            rc = parse_count("--max-open-files", optarg, 4, 1 << 20, &l->max_open_files, &err);
            break;
        case OPT_FSIZE:
            rc = parse_count("--max-file-size", optarg, 1, KB_MAX, &l->max_file_size_kb, &err);
            break;
        case OPT_PROCS:
            rc = parse_count("--max-number-of-processes", optarg, 1, 1 << 22, &l->max_processes,
                             &err);
            break;
        case OPT_STACK:
            rc = parse_count("--stack", optarg, 64, KB_MAX, &l->stack_kb, &err);
            break;
        case OPT_OUTPUT:
            rc =
                parse_count("--max-output-size", optarg, 0, 1ull << 34, &l->max_output_bytes, &err);
            break;
        case OPT_TMP:
            rc = parse_count("--tmp-size", optarg, 4, KB_MAX, &l->tmp_kb, &err);
            break;
        case OPT_DISK:
            rc = parse_count("--disk-size", optarg, 4, KB_MAX, &bopt.disk_kb, &err);
            break;
        case OPT_INODES:
            rc = parse_count("--max-inodes", optarg, 16, 1ull << 31, &bopt.max_inodes, &err);
            break;
        case OPT_STDIN:
            cfg.stdin_path = optarg;
            break;
        case OPT_BOXDIR:
            bopt.external_dir = optarg;
            break;
        case OPT_WORKDIR:
            cfg.workdir = optarg;
            break;
        case OPT_MOUNT: {
            char *colon = strchr(optarg, ':');
            if (!colon || colon == optarg || cfg.n_mounts == SBX_MAX_MOUNTS) {
                rc = ev_fail(&err, 0, "--mount expects SRC:DST (at most %d), got '%s'",
                             SBX_MAX_MOUNTS, optarg);
                break;
            }
            *colon = '\0';
            mounts[cfg.n_mounts++] = (struct sbx_mount){.source = optarg, .target = colon + 1};
            break;
        }
        case OPT_ENV:
            if (set_env(env, &n_env, optarg) < 0)
                return 2;
            break;
        case OPT_INFO:
            info = true;
            break;
        case OPT_CLEANUP:
            cleanup = true;
            break;
        case OPT_HELP:
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs("Try 'envicutor sandbox --help'.\n", stderr);
            return 2;
        }
        if (rc < 0) {
            fprintf(stderr, "envicutor sandbox: %s\n", err.msg);
            return 2;
        }
    }
    if (!info && !cleanup && optind >= argc) {
        fprintf(stderr, "envicutor sandbox: no command given\nTry 'envicutor sandbox --help'.\n");
        return 2;
    }
    cfg.argv = argv + optind;
    cfg.envp = env;
    cfg.mounts = mounts;

    struct sbx_host_config hcfg = {.run_dir = getenv("ENVICUTOR_RUN_DIR"), .log = ev_log_stderr};
    struct sbx_host host;
    if (sbx_host_init(&host, &hcfg, &err) < 0) {
        fprintf(stderr, "envicutor sandbox: %s\n", err.msg);
        return 1;
    }
    if (cleanup) {
        int n = sbx_cleanup_stale(&host, &err);
        sbx_host_free(&host);
        if (n < 0) {
            fprintf(stderr, "envicutor sandbox: cleanup: %s\n", err.msg);
            return 1;
        }
        printf("{\"boxes_checked\": %d}\n", n);
        return 0;
    }
    if (info) {
        char desc[256];
        cg_host_describe(&host.cg, desc, sizeof(desc));
        printf("{\"cgroup\": \"%s\"}\n", desc);
        sbx_host_free(&host);
        return 0;
    }
    struct sbx_box box;
    if (sbx_box_open(&host, &bopt, &box, &err) < 0) {
        fprintf(stderr, "envicutor sandbox: %s\n", err.msg);
        sbx_host_free(&host);
        return 1;
    }
    struct sbx_result res;
    int r = sbx_run(&host, &box, &cfg, &res, &err);
    sbx_box_close(&host, &box);
    sbx_host_free(&host);
    if (r < 0) {
        fprintf(stderr, "envicutor sandbox: %s\n", err.msg);
        sbx_result_free(&res);
        return 1;
    }
    json_t *j = stage_result_json(&res, 0);
    sbx_result_free(&res);
    if (!j || json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15)) < 0) {
        fprintf(stderr, "envicutor sandbox: out of memory formatting the result\n");
        json_decref(j);
        return 1;
    }
    json_decref(j);
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}
