/* The playground's files (web/), embedded in the binary at build time by scripts/embed-web, and
 * what the server says about each when it serves them (routes_static.c). */
#ifndef ENVICUTOR_STATIC_FILES_H
#define ENVICUTOR_STATIC_FILES_H

#include <stdbool.h>
#include <stddef.h>

struct static_file {
    const char *name;          /* the file's base name in web/ */
    const unsigned char *data; /* followed by a NUL that len does not count */
    size_t len;
    const char *etag; /* quoted, as sent */
};

/* Generated: every file of web/. */
extern const struct static_file static_files[];
extern const size_t static_files_count;

/* The file called name, or NULL. Only the embedded names exist: there is no file system behind
 * it, so no path (with "..", "/" or anything else) can reach another file. */
const struct static_file *static_file_find(const char *name);

/* The Content-Type of a file by its extension, or NULL for one the server does not serve. */
const char *static_content_type(const char *name);

/* Whether a Host header may be written into the Content-Security-Policy: a host name, an IPv4
 * address or a bracketed IPv6 one, with an optional port, and nothing else. */
bool static_host_valid(const char *host);

#endif
