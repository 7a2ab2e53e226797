#ifndef ENVICUTOR_RMTREE_H
#define ENVICUTOR_RMTREE_H

#include "common/error.h"

/* Removes dirfd/name and everything below it without ever following a symbolic link: each
 * level is opened with O_NOFOLLOW relative to its parent's descriptor, so a link or a rename
 * race planted by untrusted code cannot redirect the removal outside the tree. Directories the
 * owner made unreadable (chmod 0) are made accessible first. Missing name is not an error. */
int rmtree_at(int dirfd, const char *name, struct ev_err *err);

#endif
