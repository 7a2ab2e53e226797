/* Asynchronous submissions run on this node, through the pipeline (submissions_local.c). */
#ifndef ENVICUTOR_SUBMISSIONS_LOCAL_H
#define ENVICUTOR_SUBMISSIONS_LOCAL_H

#include "http/submissions.h"
#include "pipeline/pipeline.h"

struct local_runner;

/* Starts MAX_CONCURRENT_SUBMISSIONS workers and becomes subs' runner. */
struct local_runner *local_runner_start(struct submissions *subs, struct pipeline *p,
                                        const struct ev_config *cfg, struct ev_err *err);
/* After the pipeline was stopped (which refuses every waiting job and hands it to the
 * workers, and returns once nothing runs): the workers record what they were given and end. */
void local_runner_stop(struct local_runner *lr);

#endif
