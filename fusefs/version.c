/*
 * version.c - immutable snapshots of active certificates (see version.h).
 *
 * A version is written once by the thread that builds it and then only
 * read, from any thread; the reference count is the only field that
 * changes, with atomic operations.
 */
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/seal.h"
#include "cmkcert/util.h"
#include "version.h"

static uint64_t next_gen = 1;   /* atomic */

/* Copy a PEM text, adding the final newline when it lacks one; NULL input gives "". */
static char *copy_pem(const char *pem, size_t *len)
{
	size_t n = pem != NULL ? strlen(pem) : 0;
	bool add_nl = n > 0 && pem[n - 1] != '\n';
	char *p = malloc(n + (add_nl ? 1 : 0) + 1);

	if (p == NULL)
		return NULL;
	if (n > 0)
		memcpy(p, pem, n);
	if (add_nl)
		p[n++] = '\n';
	p[n] = '\0';
	*len = n;
	return p;
}

int fsver_new(const struct cmk_cert_record *rec, const struct cmk_config *cfg, struct fsver **out)
{
	struct fsver *v;

	*out = NULL;
	if (rec->cert_pem == NULL || rec->cert_pem[0] == '\0')
		return cmk_fail(CMK_ERR_INVALID, "record %llu (%s-%s) has no certificate",
				(unsigned long long)rec->id, rec->tenant, rec->type);
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return CMK_ERR_NOMEM;
	v->refs = 1;
	v->gen = __atomic_fetch_add(&next_gen, 1, __ATOMIC_RELAXED);
	v->record_id = rec->id;
	memcpy(v->tenant, rec->tenant, sizeof(v->tenant));
	memcpy(v->type, rec->type, sizeof(v->type));
	memcpy(v->serial, rec->serial, sizeof(v->serial));
	memcpy(v->fingerprint, rec->fingerprint, sizeof(v->fingerprint));
	v->activated_at = rec->activated_at;
	cmk_config_owner(cfg, rec->tenant, &v->uid, &v->gid);
	if ((v->cert = copy_pem(rec->cert_pem, &v->cert_len)) == NULL ||
	    (v->chain = copy_pem(rec->chain_pem, &v->chain_len)) == NULL)
		goto nomem;
	if (rec->sealed_key != NULL && cmk_unseal_size(rec->sealed_key_len) > 0) {
		if ((v->sealed = malloc(rec->sealed_key_len)) == NULL)
			goto nomem;
		memcpy(v->sealed, rec->sealed_key, rec->sealed_key_len);
		v->sealed_len = rec->sealed_key_len;
		v->key_len = cmk_unseal_size(rec->sealed_key_len);
	}
	*out = v;
	return 0;
nomem:
	fsver_unref(v);
	return CMK_ERR_NOMEM;
}

struct fsver *fsver_ref(struct fsver *v)
{
	__atomic_fetch_add(&v->refs, 1, __ATOMIC_RELAXED);
	return v;
}

void fsver_unref(struct fsver *v)
{
	if (v == NULL || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	free(v->cert);
	free(v->chain);
	/* Sealed, so not secret; wiped anyway so no copy of it outlives the record. */
	cmk_freezero(v->sealed, v->sealed_len);
	free(v);
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

bool fsver_same(const struct fsver *a, const struct fsver *b)
{
	return a->record_id == b->record_id && a->activated_at == b->activated_at && a->uid == b->uid &&
	       a->gid == b->gid && strcmp(a->serial, b->serial) == 0 &&
	       strcmp(a->fingerprint, b->fingerprint) == 0 &&
	       same_bytes(a->cert, a->cert_len, b->cert, b->cert_len) &&
	       same_bytes(a->chain, a->chain_len, b->chain, b->chain_len) &&
	       same_bytes(a->sealed, a->sealed_len, b->sealed, b->sealed_len);
}

bool fsver_newer(const struct fsver *a, const struct fsver *b)
{
	if (a->activated_at != b->activated_at)
		return a->activated_at > b->activated_at;
	return a->record_id > b->record_id;
}

size_t fsver_bundle_len(const struct fsver *v)
{
	return v->key_len + 1 + v->cert_len + v->chain_len;
}
