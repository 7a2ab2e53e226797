/* The release, printed by `envicutor --version`; the Makefile reads it for the Debian
 * package's version (make deb), so it is written in one place only. */
#ifndef ENVICUTOR_VERSION_H
#define ENVICUTOR_VERSION_H

#define ENVICUTOR_VERSION "0.1.0"

#endif
