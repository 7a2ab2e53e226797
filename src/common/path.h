/* The one search of a colon-separated list of directories such as PATH. The sandbox's child
 * walks it with execve (the box's own PATH, not the helper's); the server and the helper look
 * for a command with find_in_path. */
#ifndef ENVICUTOR_PATH_H
#define ENVICUTOR_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* Writes the next candidate "DIR/name" of the list at *cursor into out and advances *cursor;
 * false at the end of the list. An empty entry stands for the current directory, as execvp
 * reads it (the candidate is name itself), but an empty list and a trailing ':' give nothing.
 * An entry too long for out is skipped. Allocates nothing and calls no library function that
 * is not async-signal-safe: the sandbox's child uses it between clone and execve. */
bool path_next(const char **cursor, const char *name, char *out, size_t size);

/* Puts into out the first "DIR/name" of path that is executable (access X_OK), looking only in
 * absolute directories: what a server or the helper finds must not depend on its working
 * directory. 0, or -1 when there is none. */
int find_in_path(const char *name, const char *path, char *out, size_t size);

#endif
