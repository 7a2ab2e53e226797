/* The StageResult object of SPEC §3, built from the sandbox's result. Shared by the command
 * line and the HTTP layer so both answer with the same shape. */
#ifndef ENVICUTOR_STAGE_JSON_H
#define ENVICUTOR_STAGE_JSON_H

#include <jansson.h>

#include "sandbox/result.h"

/* NULL when out of memory. base64 output is for programs whose output is not text. */
json_t *stage_result_json(const struct sbx_result *res, int base64_output);

#endif
