#ifndef ENVICUTOR_MHD_LOADER_H
#define ENVICUTOR_MHD_LOADER_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <microhttpd.h>

#include "common/error.h"

/* Loads libmicrohttpd (see mhd_loader.c for why it is not linked). */
int mhd_load(struct ev_err *err);

#endif
