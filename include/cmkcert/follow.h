/*
 * follow.h - what the store's running cmkcertfs mounts show of a change
 * just committed (core/follow.c), for the CLI's --wait and the daemon's
 * control socket.
 */
#ifndef CMKCERT_FOLLOW_H
#define CMKCERT_FOLLOW_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "cmkcert/lifecycle.h"

#define CMK_FOLLOW_WAIT_DEFAULT_S 10
#define CMK_FOLLOW_WAIT_MAX_S 86400

struct cmk_follow {
	char *line;      /* "mount: ..." for people */
	json_t *json;    /* the "mount" field of JSON output */
	char *error;     /* waiting failed: why (a mount did not show it in time, or the registry could not be read) */
	bool failed;     /* waiting failed; the change itself is committed */
};

/*
 * Look at the mounts of ctx's store after a commit; with `wait`, wait up to
 * `wait_ms` for every live mount to show the change.  Never fails the
 * operation: what went wrong is in `f`.  Release with cmk_follow_clear().
 */
void cmk_follow_mounts(struct cmk_ctx *ctx, bool wait, int64_t wait_ms, struct cmk_follow *f);

/* Free what `f` holds and zero it.  Safe on a zeroed struct and NULL. */
void cmk_follow_clear(struct cmk_follow *f);

/*
 * A wait in seconds ("2", "0.5", "10s"; 0 to CMK_FOLLOW_WAIT_MAX_S) into
 * milliseconds; NULL gives the default.  CMK_ERR_INVALID with detail.
 */
int cmk_follow_parse_wait(const char *arg, int64_t *wait_ms);

#endif
