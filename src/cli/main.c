/* The one binary: `envicutor serve` and `envicutor sandbox ...`. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

static const char usage[] = "Usage: envicutor COMMAND [OPTIONS]\n"
                            "\n"
                            "Commands:\n"
                            "  serve     the HTTP server (code execution API)\n"
                            "  sandbox   run one command in a fresh box and print its metrics\n"
                            "\n"
                            "Run 'envicutor COMMAND --help' for a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "sandbox") == 0)
        return cmd_sandbox(argc - 1, argv + 1);
    if (strcmp(argv[1], "privileged-helper") == 0)
        return cmd_privileged_helper(argc - 1, argv + 1);
    fprintf(stderr, "envicutor: unknown command '%s'\n%s", argv[1], usage);
    return 2;
}
