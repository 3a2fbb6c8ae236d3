/*
 * access.c - the daemon's read-permission check (see access.h).
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "access.h"

/* The caller's supplementary groups; none when they cannot be read (unknown counts as no). */
static void fetch_groups(struct access_caller *c)
{
	int n = fuse_req_getgroups(c->req, ACCESS_GROUPS_GUESS, c->small);

	c->groups = c->small;
	if (n > ACCESS_GROUPS_GUESS) {
		/* More groups than guessed: ask again with room for all of them. */
		gid_t *all = malloc((size_t)n * sizeof(*all));
		int size = n;

		n = 0;
		if (all != NULL) {
			c->groups = all;
			n = fuse_req_getgroups(c->req, size, all);
			if (n > size)
				n = size;
		}
	}
	c->n_groups = n > 0 ? n : 0;
}

static bool in_groups(struct access_caller *c, gid_t gid)
{
	if (c->n_groups < 0)
		fetch_groups(c);
	for (int i = 0; i < c->n_groups; i++)
		if (c->groups[i] == gid)
			return true;
	return false;
}

void access_caller_init(struct access_caller *c, fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	c->req = req;
	c->uid = ctx->uid;
	c->gid = ctx->gid;
	c->n_groups = -1;
	c->groups = c->small;
}

void access_caller_done(struct access_caller *c)
{
	if (c->groups != c->small)
		free(c->groups);
	c->groups = c->small;
}

bool access_caller_may_read(struct access_caller *c, uid_t uid, gid_t gid, mode_t mode)
{
	if (c->uid == 0)
		return true;
	if (c->uid == uid)
		return (mode & S_IRUSR) != 0;
	if (c->gid == gid)
		return (mode & S_IRGRP) != 0;
	/* Reading /proc for the groups only matters when group and other bits differ. */
	if (((mode & S_IRGRP) != 0) != ((mode & S_IROTH) != 0) && in_groups(c, gid))
		return (mode & S_IRGRP) != 0;
	return (mode & S_IROTH) != 0;
}

bool access_may_read(fuse_req_t req, uid_t uid, gid_t gid, mode_t mode)
{
	struct access_caller c;
	bool ok;

	access_caller_init(&c, req);
	ok = access_caller_may_read(&c, uid, gid, mode);
	access_caller_done(&c);
	return ok;
}
