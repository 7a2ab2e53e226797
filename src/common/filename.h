/* The one rule for the name of a file the server writes into a box (a runtime's
 * source_file_name): the HTTP layer applies it when a runtime is added, and the privileged
 * helper again on every write, so a name accepted by one is never refused by the other. */
#ifndef ENVICUTOR_FILENAME_H
#define ENVICUTOR_FILENAME_H

#include <stdbool.h>

#define FILE_NAME_MAX 255 /* bytes, the limit of a name in a Linux file system */

/* Not empty, not "." or "..", no '/', at most FILE_NAME_MAX bytes. */
bool plain_file_name(const char *name);

#endif
