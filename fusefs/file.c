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

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/seal.h"
#include "access.h"
#include "auditq.h"
#include "file.h"
#include "lockmem.h"
#include "tree.h"

struct fh {
	struct node *node;            /* kept alive by node->handles */
	struct fsver *ver;            /* the version this handle reads */
	bool cached;                  /* counted in node->cache_users */
	const char *data;             /* what read() serves */
	size_t len;
	struct lockbuf buf;           /* key and bundle bytes */
	struct fh *prev, *next;       /* fs->key_handles */
};

static const char *dir_of(enum node_kind kind)
{
	return kind == NODE_KEY ? "/private" : "/bundle";
}

/* Undo the bookkeeping of open() and free the handle.  Called with the tree lock held. */
static void fh_drop_locked(struct cmkfs *fs, struct fh *fh)
{
	struct node *n = fh->node;

	if (fh->buf.p != NULL) {
		if (fh->prev != NULL)
			fh->prev->next = fh->next;
		else if (fs->key_handles == fh)
			fs->key_handles = fh->next;
		if (fh->next != NULL)
			fh->next->prev = fh->prev;
	}
	n->handles--;
	if (fh->cached)
		n->cache_users--;
	tree_node_idle(fs->tree, n);
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

static void audit_event(struct keyread_event *ev, fuse_req_t req, enum node_kind kind, const char *name,
			const struct fsver *v, const char *outcome, const char *why)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	memset(ev, 0, sizeof(*ev));
	snprintf(ev->outcome, sizeof(ev->outcome), "%s", outcome);
	memcpy(ev->tenant, v->tenant, sizeof(ev->tenant));
	memcpy(ev->type, v->type, sizeof(ev->type));
	memcpy(ev->serial, v->serial, sizeof(ev->serial));
	memcpy(ev->fingerprint, v->fingerprint, sizeof(ev->fingerprint));
	snprintf(ev->detail, sizeof(ev->detail), "%s/%s%s%s", dir_of(kind), name, why ? ": " : "", why ? why : "");
	ev->record_id = v->record_id;
	ev->uid = (long)c->uid;
	ev->gid = (long)c->gid;
	ev->pid = (long)c->pid;
}

void file_audit_refused(struct cmkfs *fs, fuse_req_t req, enum node_kind kind, const char *name,
			const struct fsver *v)
{
	struct keyread_event ev;

	audit_event(&ev, req, kind, name, v, "denied", "kernel permission check");
	(void)auditq_push(fs->auditq, &ev);
}

/* Unseal the key (and for a bundle append leaf and chain) into locked memory. */
static int fill_key(struct cmkfs *fs, struct fh *fh)
{
	const struct fsver *v = fh->ver;
	struct cmk_seal_aad aad = { v->tenant, v->type, v->record_id, v->serial };
	size_t len = fh->node->kind == NODE_KEY ? v->key_len : fsver_bundle_len(v), pt_len = 0;
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
	if (fh->node->kind == NODE_BUNDLE) {
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
	struct keyread_event ev;
	int rc;

	enum node_kind kind = fh->node->kind;
	const char *name = fh->node->name;

	if ((rc = fill_key(fs, fh)) != 0) {
		cmk_log(CMK_LOG_ERROR, "open %s/%s: %s", dir_of(kind), name,
			rc == CMK_ERR_NOMEM ? "out of memory" : cmk_errdetail());
		audit_event(&ev, req, kind, name, fh->ver, "failure", cmk_strerror(rc));
		(void)auditq_push(fs->auditq, &ev);
		return rc == CMK_ERR_NOMEM ? ENOMEM : EIO;
	}
	audit_event(&ev, req, kind, name, fh->ver, "success", NULL);
	if (auditq_push(fs->auditq, &ev) != 0) {
		cmk_log(CMK_LOG_ERROR, "open %s/%s: refused: %s", dir_of(kind), name, cmk_errdetail());
		return EIO;
	}
	return 0;
}

void file_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fuse_req_userdata(req);
	struct keyread_event ev;
	struct fh *fh;
	struct node *n;
	struct stat st;
	bool keep = false;
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
	tree_lock(fs->tree);
	n = tree_node(fs->tree, ino);
	if (n == NULL || n->kind == NODE_DIR || !n->attached) {
		err = n != NULL && n->kind == NODE_DIR ? EISDIR : ENOENT;
		tree_unlock(fs->tree);
		free(fh);
		fuse_reply_err(req, err);
		return;
	}
	fh->node = n;
	fh->ver = fsver_ref(n->ver);
	n->handles++;
	tree_stat(fs->tree, n, &st);
	if (!node_has_key(n) && (n->cache_users == 0 || n->cache_gen == fh->ver->gen)) {
		/* Reads of this version may use the page cache; keep it if it already holds this version. */
		keep = n->cache_gen == fh->ver->gen;
		n->cache_gen = fh->ver->gen;
		n->cache_users++;
		fh->cached = true;
	}
	tree_unlock(fs->tree);

	if (!access_may_read(req, st.st_uid, st.st_gid, st.st_mode)) {
		if (node_has_key(n)) {
			audit_event(&ev, req, n->kind, n->name, fh->ver, "denied", NULL);
			(void)auditq_push(fs->auditq, &ev);
		}
		err = EACCES;
		goto fail;
	}
	if (node_has_key(n)) {
		if ((err = open_key(fs, req, fh)) != 0)
			goto fail;
		tree_lock(fs->tree);
		fh->next = fs->key_handles;
		if (fh->next != NULL)
			fh->next->prev = fh;
		fs->key_handles = fh;
		tree_unlock(fs->tree);
		fi->direct_io = 1;
	} else {
		fh->data = n->kind == NODE_CERT ? fh->ver->cert : fh->ver->chain;
		fh->len = n->kind == NODE_CERT ? fh->ver->cert_len : fh->ver->chain_len;
		fi->direct_io = fh->cached ? 0 : 1;
		fi->keep_cache = keep ? 1 : 0;
	}
	fi->noflush = 1;
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
	const struct fh *fh = (const struct fh *)(uintptr_t)fi->fh;
	size_t n;

	(void)ino;
	if (off < 0 || (uint64_t)off >= fh->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	n = fh->len - (size_t)off;
	if (n > size)
		n = size;
	fuse_reply_buf(req, fh->data + off, n);
}

void file_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct cmkfs *fs = fuse_req_userdata(req);

	(void)ino;
	fh_free(fs, (struct fh *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
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
