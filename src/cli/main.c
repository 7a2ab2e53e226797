/* The one binary: `envicutor serve`, `envicutor sandbox ...` and `envicutor catalog check`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/version.h"
#include "privsep/helper.h"

static const char usage[] = "Usage: envicutor COMMAND [OPTIONS]\n"
                            "\n"
                            "Commands:\n"
                            "  serve     the HTTP server (code execution API)\n"
                            "  worker    runs the jobs of a cluster (REDIS_URL)\n"
                            "  sandbox   run one command in a fresh box and print its metrics\n"
                            "  catalog   check a runtime catalog: validate it, run every sample\n"
                            "\n"
                            "Run 'envicutor COMMAND --help' for a command's options,\n"
                            "'envicutor --version' for the version; man envicutor.\n";

/* A box's init is a clone of this process and overwrites, in its copy, the memory that the
 * kernel shows as /proc/1/cmdline and /proc/1/environ (sandbox/run.c, hide_command_line), so
 * that a box learns nothing of this command line. What a run uses must then live elsewhere:
 * every argument and environment string is moved to the heap before anything reads them. */
/* Every copy stays listed here for the process's life: setenv and unsetenv may replace
 * environ's array or drop entries from it, and the strings must stay reachable (`used`: a list
 * only ever written would otherwise be optimised away). */
static char **moved __attribute__((used));

static int move_arguments_and_environment(int argc, char **argv)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **list = calloc((size_t)argc + n + 1, sizeof(*list));
    char **env = calloc(n + 1, sizeof(*env));
    if (!list || !env)
        return -1;
    moved = list;
    size_t k = 0;
    list[k++] = (char *)env;
    for (int i = 0; i < argc; i++)
        if (!(list[k++] = argv[i] = strdup(argv[i])))
            return -1;
    for (size_t i = 0; i < n; i++)
        if (!(list[k++] = env[i] = strdup(environ[i])))
            return -1;
    environ = env;
    return 0;
}

int main(int argc, char **argv)
{
    if (move_arguments_and_environment(argc, argv) < 0) {
        fputs("envicutor: out of memory\n", stderr);
        return 1;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("envicutor %s\n", ENVICUTOR_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "worker") == 0)
        return cmd_worker(argc - 1, argv + 1);
    if (strcmp(argv[1], "sandbox") == 0)
        return cmd_sandbox(argc - 1, argv + 1);
    if (strcmp(argv[1], "catalog") == 0)
        return cmd_catalog(argc - 1, argv + 1);
    if (strcmp(argv[1], HELPER_COMMAND) == 0)
        return helper_process_main(argc - 1, argv + 1);
    fprintf(stderr, "envicutor: unknown command '%s'\n%s", argv[1], usage);
    return 2;
}
