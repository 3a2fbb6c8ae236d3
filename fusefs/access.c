/*
 * access.c - the daemon's read-permission check (see access.h).
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "access.h"

#define GROUPS_GUESS 64

/* Is `gid` among the caller's supplementary groups?  Unknown counts as no. */
static bool in_groups(fuse_req_t req, gid_t gid)
{
	gid_t small[GROUPS_GUESS], *list = small;
	int n, size = GROUPS_GUESS;
	bool found = false;

	n = fuse_req_getgroups(req, size, list);
	if (n > size) {
		/* More groups than guessed: ask again with room for all of them. */
		size = n;
		if ((list = malloc((size_t)size * sizeof(*list))) == NULL)
			return false;
		n = fuse_req_getgroups(req, size, list);
		if (n > size)
			n = size;
	}
	for (int i = 0; i < n; i++)
		if (list[i] == gid)
			found = true;
	if (list != small)
		free(list);
	return found;
}

bool access_may_read(fuse_req_t req, uid_t uid, gid_t gid, mode_t mode)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	if (c->uid == 0)
		return true;
	if (c->uid == uid)
		return (mode & S_IRUSR) != 0;
	if (c->gid == gid)
		return (mode & S_IRGRP) != 0;
	/* Reading /proc for the groups only matters when group and other bits differ. */
	if (((mode & S_IRGRP) != 0) != ((mode & S_IROTH) != 0) && in_groups(req, gid))
		return (mode & S_IRGRP) != 0;
	return (mode & S_IROTH) != 0;
}
