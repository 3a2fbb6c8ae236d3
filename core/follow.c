/*
 * follow.c - after a change is committed: which cmkcertfs mounts serve the
 * store and when they show the change; waiting, until they do.  The CLI
 * (--wait) and the daemon's control socket report it the same way.
 *
 * The registry of running mounts (mounts.h) says where each daemon of this
 * store is mounted and which change-log position its tree serves.  The
 * change log's last sequence, read after our commit, is a position that
 * includes our change: a mount serving it or later shows the change.  A
 * mount follows the log every CMK_MOUNTS_FOLLOW_MS, so without --wait the
 * line says "within 0.2 s", unless the mount has stopped publishing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/follow.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/mounts.h"
#include "cmkcert/util.h"

/* A following mount shows a change within one look at the log plus the time to apply it. */
#define SHOWS_WITHIN_MS (CMK_MOUNTS_FOLLOW_MS + 50)

int cmk_follow_parse_wait(const char *arg, int64_t *wait_ms)
{
	char *end;
	double sec;

	*wait_ms = CMK_FOLLOW_WAIT_DEFAULT_S * 1000;
	if (arg == NULL)
		return 0;
	errno = 0;
	sec = strtod(arg, &end);
	if (end != arg && *end == 's')
		end++;
	/* The comparison also refuses NaN. */
	if (end == arg || *end != '\0' || errno != 0 || !(sec >= 0 && sec <= CMK_FOLLOW_WAIT_MAX_S))
		return cmk_fail(CMK_ERR_INVALID, "wait \"%s\": give the seconds to wait, 0 to %d", arg,
				CMK_FOLLOW_WAIT_MAX_S);
	*wait_ms = (int64_t)(sec * 1000.0 + 0.5);
	return 0;
}

static bool is_following(const struct cmk_mount_info *m)
{
	return m->age_ms >= 0 && m->age_ms <= CMK_MOUNTS_STALE_MS;
}

static void put_age(FILE *o, const struct cmk_mount_info *m)
{
	if (m->age_ms < 0)
		fputs("no update yet", o);
	else
		fprintf(o, "last update %.1f s ago", (double)m->age_ms / 1000.0);
}

/* One mount's part of the line. */
static void put_mount(FILE *o, bool wait, const struct cmk_mount_info *m, uint64_t change, bool timed_out,
		      int64_t waited_ms)
{
	bool shows = m->seq >= change;

	fprintf(o, "%s (cmkcertfs pid %d) ", m->mountpoint, (int)m->pid);
	if (shows) {
		fputs(wait ? "shows the change" : "shows the change now", o);
	} else if (timed_out) {
		fprintf(o, "does not show the change after %.1f s: it serves change %" PRIu64 ", the change is %" PRIu64
			" (", (double)waited_ms / 1000.0, m->seq, change);
		put_age(o, m);
		fputs(")", o);
	} else if (is_following(m)) {
		fprintf(o, "shows the change within %.1f s", SHOWS_WITHIN_MS / 1000.0);
	} else {
		fputs("is not following the store (", o);
		put_age(o, m);
		fputs("); it shows the change once it follows again", o);
	}
}

static json_t *mount_json(const struct cmk_mount_info *m, uint64_t change)
{
	char at[32];
	json_t *o = json_object();

	json_object_set_new(o, "mountpoint", json_string(m->mountpoint));
	json_object_set_new(o, "pid", json_integer(m->pid));
	json_object_set_new(o, "change", json_integer((json_int_t)m->seq));
	json_object_set_new(o, "shows_change", json_boolean(m->seq >= change));
	json_object_set_new(o, "following", json_boolean(is_following(m)));
	if (m->updated_ms > 0) {
		cmk_format_time(m->updated_ms / 1000, at, sizeof(at));
		json_object_set_new(o, "updated", json_string(at));
	} else {
		json_object_set_new(o, "updated", json_null());
	}
	return o;
}

void cmk_follow_mounts(struct cmk_ctx *ctx, bool wait, int64_t wait_ms, struct cmk_follow *f)
{
	const char *dir = ctx->cfg->store.path;
	struct cmk_mount_info *v = NULL;
	int64_t t0 = cmk_monotonic_ms(), waited = -1;
	uint64_t change = 0;
	bool timed_out, all = true;
	size_t n = 0, len = 0;
	json_t *list;
	FILE *o;
	int rc;

	memset(f, 0, sizeof(*f));
	f->json = json_object();
	json_object_set_new(f->json, "store", json_string(dir));
	if ((rc = cmk_store_change_last(ctx->store, &change)) == 0) {
		if (wait) {
			rc = cmk_mounts_wait(dir, change, t0 + wait_ms, &v, &n);
			waited = cmk_monotonic_ms() - t0;
		} else {
			rc = cmk_mounts_live(dir, &v, &n);
		}
	}
	timed_out = rc == CMK_ERR_TIMEOUT;
	/* Only waiting can fail: its deadline passed, or it could not tell. */
	f->failed = rc != 0 && wait;
	if ((o = open_memstream(&f->line, &len)) == NULL)
		goto out;
	fputs("mount: ", o);
	if (rc != 0 && !timed_out) {
		/* The change is committed whatever happens here; only --wait could not do its part. */
		fprintf(o, "cannot tell which cmkcertfs mounts serve this store: %s", cmk_errdetail());
		json_object_set_new(f->json, "error", json_string(cmk_errdetail()));
		if (wait)
			f->error = cmk_asprintf("the change is committed, but cannot tell whether the mounts show it: "
						"%s", cmk_errdetail());
		fclose(o);
		goto out;
	}
	list = json_array();
	for (size_t i = 0; i < n; i++) {
		all = all && v[i].seq >= change;
		fputs(i > 0 ? "; " : "", o);
		put_mount(o, wait, &v[i], change, timed_out, waited);
		json_array_append_new(list, mount_json(&v[i], change));
		if (timed_out && v[i].seq < change && f->error == NULL)
			f->error = cmk_asprintf("the change is committed, but after %.1f s %s (cmkcertfs pid %d) does "
						"not show it (it serves change %" PRIu64 ", the change is %" PRIu64
						")", (double)waited / 1000.0, v[i].mountpoint, (int)v[i].pid, v[i].seq,
						change);
	}
	if (n == 0)
		fprintf(o, "no cmkcertfs serves this store (%s)%s", dir, wait ? "; nothing to wait for" : "");
	else if (wait && !timed_out)
		fprintf(o, "; waited %.2f s", (double)waited / 1000.0);
	fclose(o);
	json_object_set_new(f->json, "change", json_integer((json_int_t)change));
	json_object_set_new(f->json, "served", json_boolean(n > 0));
	json_object_set_new(f->json, "shows_change", json_boolean(n > 0 && all));
	json_object_set_new(f->json, "waited_ms", waited >= 0 ? json_integer(waited) : json_null());
	json_object_set_new(f->json, "timed_out", json_boolean(timed_out));
	json_object_set_new(f->json, "mounts", list);
out:
	if (f->line != NULL)
		json_object_set_new(f->json, "message", json_string(f->line + strlen("mount: ")));
	cmk_mounts_free(v);
}

void cmk_follow_clear(struct cmk_follow *f)
{
	if (f == NULL)
		return;
	json_decref(f->json);
	free(f->line);
	free(f->error);
	memset(f, 0, sizeof(*f));
}
