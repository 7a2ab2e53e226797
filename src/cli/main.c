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

int main(int argc, char **argv)
{
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
