/*
 * file.c - open, read and release (see file.h for the caching rules).
 *
 * open() does its bookkeeping in one short section under the tree lock
 * (take a reference on the current version, count the handle, choose
 * cached or direct reads), then checks the caller and, for key files,
 * unseals and queues the audit event without holding any lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/seal.h"
#include "cmkcert/util.h"
#include "access.h"
#include "auditq.h"
#include "file.h"
#include "lockmem.h"
#include "pin.h"
#include "tree.h"
#include "watch.h"

/* How long a key open waits for the watcher to catch up before it fails closed. */
#define KEY_WAIT_MS 2000

struct fh {
	unsigned long refs;           /* atomic: the open file, and each read replying from it */
	struct node *node;            /* kept alive by node->handles */
	struct fsver *ver;            /* the version this handle reads */
	char path[TREE_NAME_MAX * 2]; /* for the audit trail and messages */
	pid_t tgid;                   /* the process that opened it */
	bool bundle_open;             /* a bundle open counted by the load pins, until its close (flush) */
	const char *data;             /* what read() serves */
	size_t len;
	struct lockbuf buf;           /* key and bundle bytes */
	bool listed;                  /* in fs->key_handles, to be wiped if never released */
	struct fh *prev, *next;
};

/* Undo the bookkeeping of open() and free the handle.  Called with the tree lock held. */
static void fh_drop_locked(struct cmkfs *fs, struct fh *fh)
{
	struct node *n = fh->node;

	if (fh->listed) {
		if (fh->prev != NULL)
			fh->prev->next = fh->next;
		else
			fs->key_handles = fh->next;
		if (fh->next != NULL)
			fh->next->prev = fh->prev;
	}
	if (fh->bundle_open)
		tree_bundle_closed(fs->tree, n, fh->tgid);
	tree_handle_released(fs->tree, n);
}

static void fh_free(struct cmkfs *fs, struct fh *fh)
{
	tree_lock(fs->tree);
	fh_drop_locked(fs, fh);
	tree_unlock(fs->tree);
	lockmem_put(fs->lockmem, &fh->buf);
	fsver_unref(fh->ver);
	free(fh);
}

/*
 * The kernel sends release only once no read of the handle is in flight,
 * but "in flight" ends when it has the reply, which can be just before the
 * reading thread returns from sending it: the last of the two frees.
 */
static void fh_put(struct cmkfs *fs, struct fh *fh)
{
	if (__atomic_sub_fetch(&fh->refs, 1, __ATOMIC_ACQ_REL) == 0)
		fh_free(fs, fh);
}

static void audit_event(struct keyread_event *ev, fuse_req_t req, const char *path, const struct fsver *v,
			const char *outcome, const char *why)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	memset(ev, 0, sizeof(*ev));
	snprintf(ev->outcome, sizeof(ev->outcome), "%s", outcome);
	memcpy(ev->tenant, v->tenant, sizeof(ev->tenant));
	memcpy(ev->type, v->type, sizeof(ev->type));
	memcpy(ev->serial, v->serial, sizeof(ev->serial));
	memcpy(ev->fingerprint, v->fingerprint, sizeof(ev->fingerprint));
	snprintf(ev->detail, sizeof(ev->detail), "%s%s%s", path, why ? ": " : "", why ? why : "");
	ev->record_id = v->record_id;
	ev->uid = (long)c->uid;
	ev->gid = (long)c->gid;
	ev->pid = (long)c->pid;
}

bool file_stat(struct cmkfs *fs, const struct fuse_file_info *fi, struct stat *st)
{
	const struct fh *fh = (const struct fh *)(uintptr_t)fi->fh;
	bool current;

	tree_lock(fs->tree);
	tree_stat_version(fs->tree, fh->node, fh->ver, st);
	current = fh->node->ver == fh->ver && tree_node_visible(fs->tree, fh->node);
	tree_unlock(fs->tree);
	return current;
}

/*
 * Record an open that fails anyway.  It is not waited for, and a caller
 * refused again and again is counted rather than written line by line
 * (refusals.h); if even that is impossible, say so.
 */
static void record_refusal(struct cmkfs *fs, const struct keyread_event *ev)
{
	static struct cmk_log_limit lim = CMK_LOG_LIMIT_INIT;

	if (auditq_refused(fs->auditq, ev) != 0)
		cmk_log_limited(&lim, CMK_LOG_ERROR, "audit: privateKeyRead %s by uid %ld pid %ld (%s) not recorded: %s",
			ev->outcome, ev->uid, ev->pid, ev->detail, cmk_errdetail());
}

void file_audit_refused(struct cmkfs *fs, fuse_req_t req, const char *path, const struct fsver *v)
{
	struct keyread_event ev;

	audit_event(&ev, req, path, v, "denied", "kernel permission check");
	record_refusal(fs, &ev);
}

/* Unseal the key (and for a bundle append leaf and chain) into locked memory. */
static int fill_key(struct cmkfs *fs, struct fh *fh)
{
	const struct fsver *v = fh->ver;
	struct cmk_seal_aad aad = { v->tenant, v->type, v->record_id, v->serial };
	bool bundle = fh->node->kind == FK_BUNDLE;
	size_t len = bundle ? fsver_bundle_len(v) : v->key_len, pt_len = 0;
	uint8_t *p;
	int rc;

	if ((rc = lockmem_get(fs->lockmem, len, &fh->buf)) != 0)
		return rc;
	p = fh->buf.p;
	rc = cmk_unseal_into(fs->ctx->sealer, &aad, v->sealed, v->sealed_len, p, v->key_len, &pt_len);
	if (rc == 0 && pt_len != v->key_len)
		rc = cmk_fail(CMK_ERR_INTERNAL, "unsealed %zu bytes, expected %zu", pt_len, v->key_len);
	if (rc != 0)
		return rc;
	if (bundle) {
		p[v->key_len] = '\n';
		memcpy(p + v->key_len + 1, v->cert, v->cert_len);
		memcpy(p + v->key_len + 1 + v->cert_len, v->chain, v->chain_len);
	}
	fh->data = (const char *)p;
	fh->len = len;
	return 0;
}

/* For a key file: unseal, then record the read.  Returns an errno value. */
static int open_key(struct cmkfs *fs, fuse_req_t req, struct fh *fh)
{
	static struct cmk_log_limit unseal_lim = CMK_LOG_LIMIT_INIT, audit_lim = CMK_LOG_LIMIT_INIT;
	struct keyread_event ev;
	int rc;

	if ((rc = fill_key(fs, fh)) != 0) {
		cmk_log_limited(&unseal_lim, CMK_LOG_ERROR, "open %s: %s", fh->path,
				rc == CMK_ERR_NOMEM ? "out of memory" : cmk_errdetail());
		audit_event(&ev, req, fh->path, fh->ver, "failure", cmk_strerror(rc));
		record_refusal(fs, &ev);
		return rc == CMK_ERR_NOMEM ? ENOMEM : EIO;
	}
	audit_event(&ev, req, fh->path, fh->ver, "success", NULL);
	/* Written ahead: the key goes out only once its record is on disk and anchored. */
	if (auditq_record(fs->auditq, &ev, true) != 0) {
		cmk_log_limited(&audit_lim, CMK_LOG_ERROR, "open %s: refused: %s", fh->path, cmk_errdetail());
		return EIO;
	}
	return 0;
}

/* The bytes a certificate or chain file serves. */
static void fill_public(struct fh *fh)
{
	const struct fsver *v = fh->ver;

	switch (fh->node->kind) {
	case FK_CERT:
		fh->data = v->cert;
		fh->len = v->cert_len;
		break;
	case FK_TLSCRT:
		/* Leaf and chain in one allocation-free read: see file_read(). */
		fh->data = NULL;
		fh->len = v->cert_len + v->chain_len;
		break;
	default:
		fh->data = v->chain;
		fh->len = v->chain_len;
		break;
	}
}

void file_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	static struct cmk_log_limit stale_lim = CMK_LOG_LIMIT_INIT;
	struct cmkfs *fs = fuse_req_userdata(req);
	struct keyread_event ev;
	struct fh *fh;
	struct node *n;
	struct stat st;
	pid_t tid = fuse_req_ctx(req)->pid, tgid;
	int err;

	/* The mount is read-only; the kernel refuses these first, this is the second line. */
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((fh = calloc(1, sizeof(*fh))) == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	tgid = pins_tgid(tid, cmk_monotonic_ms());
	tree_lock(fs->tree);
	n = tree_node(fs->tree, ino);
	if (n == NULL || node_is_dir(n)) {
		tree_unlock(fs->tree);
		free(fh);
		fuse_reply_err(req, n != NULL ? EISDIR : ENOENT);
		return;
	}
	/*
	 * The version of the name's slot, whichever inode of the name this
	 * is (a rotation may have renamed another onto it meanwhile), as the
	 * load pins choose it; none once the slot was removed.
	 */
	if ((fh->ver = tree_choose(fs->tree, n, tgid, tid, cmk_monotonic_ms())) == NULL) {
		tree_unlock(fs->tree);
		free(fh);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fh->node = n;
	fh->tgid = tgid;
	fh->bundle_open = n->kind == FK_BUNDLE;
	tree_handle_opened(fs->tree, n);
	tree_stat_version(fs->tree, n, fh->ver, &st);
	tree_path(fs->tree, n, fh->path, sizeof(fh->path));
	tree_unlock(fs->tree);

	if (!access_may_read(req, st.st_uid, st.st_gid, st.st_mode)) {
		if (node_has_key(n)) {
			audit_event(&ev, req, fh->path, fh->ver, "denied", NULL);
			record_refusal(fs, &ev);
		}
		err = EACCES;
		goto fail;
	}
	if (node_has_key(n)) {
		/*
		 * A key that may have been revoked meanwhile is not served: fail
		 * closed.  After a recovery the watcher catches up within a
		 * second or two; give it that long before refusing.
		 */
		if (!watch_wait_current(fs, KEY_WAIT_MS)) {
			audit_event(&ev, req, fh->path, fh->ver, "failure", "the mount is not following the store");
			record_refusal(fs, &ev);
			cmk_log_limited(&stale_lim, CMK_LOG_WARN,
					"open %s: refused: the mount is not following the store right now", fh->path);
			err = EIO;
			goto fail;
		}
		if ((err = open_key(fs, req, fh)) != 0)
			goto fail;
		tree_lock(fs->tree);
		fh->next = fs->key_handles;
		if (fh->next != NULL)
			fh->next->prev = fh;
		fs->key_handles = fh;
		fh->listed = true;
		tree_unlock(fs->tree);
		fi->direct_io = 1;
	} else {
		fill_public(fh);
		/*
		 * A /ca inode shows one chain for its whole life, so its page
		 * cache never holds two versions.  The other files may serve an
		 * older version through a newer inode (load pins): they read with
		 * direct I/O, never limited by the size the kernel has for the inode.
		 */
		fi->keep_cache = n->kind == FK_CHAIN && fh->ver == n->ver;
		fi->direct_io = !fi->keep_cache;
	}
	/* A bundle's close is reported (flush), for the load pins to tell loads at once from loads in a row. */
	fi->noflush = fh->bundle_open ? 0 : 1;
	fh->refs = 1;
	fi->fh = (uintptr_t)fh;
	/* An interrupted open never reaches a release: free the handle here. */
	if (fuse_reply_open(req, fi) != 0)
		fh_free(fs, fh);
	return;
fail:
	fh_free(fs, fh);
	fuse_reply_err(req, err);
}

void file_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fuse_req_userdata(req);
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;
	size_t n = 0;

	(void)ino;
	__atomic_add_fetch(&fh->refs, 1, __ATOMIC_RELAXED);
	if (off >= 0 && (uint64_t)off < fh->len) {
		n = fh->len - (size_t)off;
		if (n > size)
			n = size;
	}
	if (n > 0 && fh->data == NULL) {
		/* tls.crt: the leaf, then the chain, from the version's own two buffers. */
		const struct fsver *v = fh->ver;
		size_t o = (size_t)off, first = o < v->cert_len ? v->cert_len - o : 0;
		struct iovec iov[2];
		int cnt = 0;

		if (first > n)
			first = n;
		if (first > 0)
			iov[cnt++] = (struct iovec){ (void *)(v->cert + o), first };
		if (n > first)
			iov[cnt++] = (struct iovec){ (void *)(v->chain + (o + first - v->cert_len)), n - first };
		fuse_reply_iov(req, iov, cnt);
	} else {
		fuse_reply_buf(req, n > 0 ? fh->data + off : NULL, n);
	}
	fh_put(fs, fh);
}

void file_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fuse_req_userdata(req);
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	(void)ino;
	tree_lock(fs->tree);
	if (fh->bundle_open) {
		fh->bundle_open = false;
		tree_bundle_closed(fs->tree, fh->node, fh->tgid);
	}
	tree_unlock(fs->tree);
	fuse_reply_err(req, 0);
}

void file_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fuse_req_userdata(req);
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	(void)ino;
	fuse_reply_err(req, 0);
	fh_put(fs, fh);
}

void file_shutdown(struct cmkfs *fs)
{
	tree_lock(fs->tree);
	while (fs->key_handles != NULL) {
		struct fh *fh = fs->key_handles;
		fs->key_handles = fh->next;
		lockmem_put(fs->lockmem, &fh->buf);
		fsver_unref(fh->ver);
		free(fh);
	}
	tree_unlock(fs->tree);
}
