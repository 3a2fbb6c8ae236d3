/*
 * store_codec.c - the bytes the store keeps: record encodings, index keys,
 * status names and record cleanup.  No Berkeley DB here; store_bdb.c moves
 * these bytes in and out of the databases.  The layout is described in
 * store_int.h.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"
#include "store_int.h"

static const char *const status_names[CMK_ST_COUNT] = {
	[CMK_ST_PENDING] = "pending",
	[CMK_ST_ACTIVE] = "active",
	[CMK_ST_ROTATING] = "rotating",
	[CMK_ST_FAILED] = "failed",
	[CMK_ST_REVOKED] = "revoked",
	[CMK_ST_CLEANED_UP] = "cleaned_up",
	[CMK_ST_EXPIRED] = "expired",
};

const char *cmk_status_name(enum cmk_status st)
{
	return (unsigned)st < CMK_ST_COUNT ? status_names[st] : NULL;
}

int cmk_status_parse(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < CMK_ST_COUNT; i++)
		if (strcmp(name, status_names[i]) == 0)
			return i;
	return -1;
}

void cmk_cert_record_clear(struct cmk_cert_record *rec)
{
	if (rec == NULL)
		return;
	free(rec->subject);
	free(rec->last_error);
	free(rec->cert_pem);
	free(rec->chain_pem);
	cmk_freezero(rec->sealed_key, rec->sealed_key_len);
	memset(rec, 0, sizeof(*rec));
}

void cmk_keystore_record_clear(struct cmk_keystore_record *rec)
{
	if (rec == NULL)
		return;
	for (size_t i = 0; i < rec->n_endpoints; i++)
		free(rec->endpoints[i]);
	free(rec->endpoints);
	free(rec->server_ca_pem);
	memset(rec, 0, sizeof(*rec));
}

/* ---- keys ---- */

static bool is_name(const char *s, size_t len, size_t max)
{
	return len > 0 && len <= max && memchr(s, '\0', len) == NULL;
}

size_t cmk_codec_tts_key(const char *tenant, size_t tenant_len, const char *type, size_t type_len,
			 enum cmk_status status, uint8_t out[CMK_TTS_KEY_MAX])
{
	size_t n;

	if (!is_name(tenant, tenant_len, CMK_TENANT_MAX) || !is_name(type, type_len, CMK_TYPE_MAX) ||
	    (unsigned)status >= CMK_ST_COUNT)
		return 0;
	n = cmk_codec_ks_key(tenant, tenant_len, type, type_len, out);
	out[n++] = '\0';
	out[n++] = (uint8_t)status;
	return n;
}

size_t cmk_codec_ks_key(const char *tenant, size_t tenant_len, const char *type, size_t type_len,
			uint8_t out[CMK_KS_KEY_MAX])
{
	if (!is_name(tenant, tenant_len, CMK_TENANT_MAX) || !is_name(type, type_len, CMK_TYPE_MAX))
		return 0;
	memcpy(out, tenant, tenant_len);
	out[tenant_len] = '\0';
	memcpy(out + tenant_len + 1, type, type_len);
	return tenant_len + 1 + type_len;
}

bool cmk_codec_is_revoking(enum cmk_status status, uint32_t flags)
{
	return (flags & CMK_CERT_F_REVOKING) != 0 && status != CMK_ST_REVOKED && status != CMK_ST_CLEANED_UP;
}

size_t cmk_codec_status_keys(enum cmk_status status, uint32_t flags, uint8_t out[CMK_STATUS_KEYS_MAX])
{
	size_t n = 0;

	if ((unsigned)status >= CMK_ST_COUNT)
		return 0;
	out[n++] = (uint8_t)status;
	if (cmk_codec_is_revoking(status, flags))
		out[n++] = CMK_STATUS_KEY_REVOKING;
	return n;
}

/* ---- writing ---- */

struct field {
	const void *p;
	size_t n;
	bool absent;
};

static struct field f_str(const char *s)
{
	return (struct field){ s, s != NULL ? strlen(s) : 0, s == NULL };
}

static struct field f_bytes(const void *p, size_t n)
{
	return (struct field){ p, n, p == NULL };
}

/* Lay out the format byte and the fields in one exact-size allocation. */
static int encode_fields(const struct field *f, size_t nf, uint8_t **out, size_t *outlen)
{
	size_t total = 1, off = 1;
	uint8_t *buf;

	for (size_t i = 0; i < nf; i++) {
		if (f[i].n >= CMK_FIELD_ABSENT || f[i].n > SIZE_MAX - total - 4)
			return cmk_fail(CMK_ERR_INVALID, "store: a record field is too large (%zu bytes)", f[i].n);
		total += 4 + (f[i].absent ? 0 : f[i].n);
	}
	if ((buf = malloc(total)) == NULL)
		return CMK_ERR_NOMEM;
	buf[0] = CMK_REC_V1;
	for (size_t i = 0; i < nf; i++) {
		cmk_be32_put(buf + off, f[i].absent ? CMK_FIELD_ABSENT : (uint32_t)f[i].n);
		off += 4;
		if (!f[i].absent && f[i].n > 0) {
			memcpy(buf + off, f[i].p, f[i].n);
			off += f[i].n;
		}
	}
	*out = buf;
	*outlen = total;
	return 0;
}

static bool is_terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

/* Field order of certificate records, version 1.  The indexed fields come first. */
enum { C_TENANT, C_TYPE, C_STATUS, C_SERIAL, C_RENEW_AT, C_FPR, C_SUBJECT, C_NOT_BEFORE, C_NOT_AFTER,
       C_CREATED, C_ACTIVATED, C_REVOKED, C_UPDATED, C_SUPERSEDES, C_ATTEMPTS, C_FLAGS, C_LAST_ERROR,
       C_CERT_PEM, C_CHAIN_PEM, C_SEALED_KEY,
       C_KEY_SLOT,             /* added later: where the sealed key lives when not in the record */
       C_CHAIN_ID,             /* added later: the chain kept once for every record that has it */
       C_NFIELDS };

int cmk_codec_cert_encode(const struct cmk_cert_record *rec, uint8_t **buf, size_t *len)
{
	return cmk_codec_cert_encode_slot(rec, 0, buf, len);
}

int cmk_codec_cert_encode_slot(const struct cmk_cert_record *rec, uint32_t key_slot, uint8_t **buf, size_t *len)
{
	struct cmk_cert_refs refs = { .key_slot = key_slot };

	return cmk_codec_cert_encode_refs(rec, &refs, buf, len);
}

int cmk_codec_cert_encode_refs(const struct cmk_cert_record *rec, const struct cmk_cert_refs *refs, uint8_t **buf,
			       size_t *len)
{
	uint32_t key_slot = refs->key_slot;
	uint8_t status = (uint8_t)rec->status;
	uint8_t num[8][8], u32[3][4];
	struct field f[C_NFIELDS];

	if (!is_terminated(rec->tenant, sizeof(rec->tenant)) || !is_terminated(rec->type, sizeof(rec->type)) ||
	    !is_terminated(rec->serial, sizeof(rec->serial)) ||
	    !is_terminated(rec->fingerprint, sizeof(rec->fingerprint)))
		return cmk_fail(CMK_ERR_INVALID, "store: record %" PRIu64 ": a name field is not terminated", rec->id);
	if ((unsigned)rec->status >= CMK_ST_COUNT)
		return cmk_fail(CMK_ERR_INVALID, "store: record %" PRIu64 ": status %d is out of range", rec->id,
				(int)rec->status);
	cmk_be64_put(num[0], (uint64_t)rec->renew_at);
	cmk_be64_put(num[1], (uint64_t)rec->not_before);
	cmk_be64_put(num[2], (uint64_t)rec->not_after);
	cmk_be64_put(num[3], (uint64_t)rec->created_at);
	cmk_be64_put(num[4], (uint64_t)rec->activated_at);
	cmk_be64_put(num[5], (uint64_t)rec->revoked_at);
	cmk_be64_put(num[6], (uint64_t)rec->updated_at);
	cmk_be64_put(num[7], rec->supersedes);
	cmk_be32_put(u32[0], rec->attempts);
	cmk_be32_put(u32[1], rec->flags);
	f[C_TENANT] = f_str(rec->tenant);
	f[C_TYPE] = f_str(rec->type);
	f[C_STATUS] = f_bytes(&status, 1);
	f[C_SERIAL] = f_str(rec->serial);
	f[C_RENEW_AT] = f_bytes(num[0], 8);
	f[C_FPR] = f_str(rec->fingerprint);
	f[C_SUBJECT] = f_str(rec->subject);
	f[C_NOT_BEFORE] = f_bytes(num[1], 8);
	f[C_NOT_AFTER] = f_bytes(num[2], 8);
	f[C_CREATED] = f_bytes(num[3], 8);
	f[C_ACTIVATED] = f_bytes(num[4], 8);
	f[C_REVOKED] = f_bytes(num[5], 8);
	f[C_UPDATED] = f_bytes(num[6], 8);
	f[C_SUPERSEDES] = f_bytes(num[7], 8);
	f[C_ATTEMPTS] = f_bytes(u32[0], 4);
	f[C_FLAGS] = f_bytes(u32[1], 4);
	f[C_LAST_ERROR] = f_str(rec->last_error);
	f[C_CERT_PEM] = f_str(rec->cert_pem);
	/* A chain kept apart is absent here and named by its id (the store reads it back). */
	f[C_CHAIN_PEM] = refs->has_chain_id ? f_bytes(NULL, 0) : f_str(rec->chain_pem);
	cmk_be32_put(u32[2], key_slot);
	f[C_KEY_SLOT] = f_bytes(u32[2], 4);
	f[C_CHAIN_ID] = f_bytes(refs->chain_id, CMK_CHAIN_ID_LEN);
	/* With a slot the key is kept there, not in the record (store_keys.c). */
	f[C_SEALED_KEY] = key_slot != 0 ? f_bytes(NULL, 0) : f_bytes(rec->sealed_key, rec->sealed_key_len);
	/* Fields added later are written only when used, so records stay readable by the code before them. */
	return encode_fields(f, refs->has_chain_id ? C_NFIELDS : key_slot != 0 ? C_CHAIN_ID : C_KEY_SLOT, buf, len);
}

/* ---- reading ---- */

struct rd {
	const uint8_t *p;
	size_t len, off;
	const char *field;     /* the field being read, for the error detail */
};

/* Start reading: the format byte must be one this code knows. */
static int rd_start(struct rd *r, const void *buf, size_t len)
{
	r->p = buf;
	r->len = len;
	r->off = 1;
	r->field = "format";
	return len >= 1 && r->p[0] == CMK_REC_V1 ? 0 : CMK_ERR_STORE;
}

/* The next field: 0 (present), 1 (absent, *f = NULL) or CMK_ERR_STORE (truncated). */
static int rd_field(struct rd *r, const char *name, const uint8_t **f, size_t *n)
{
	uint32_t l;

	r->field = name;
	if (r->len - r->off < 4)
		return CMK_ERR_STORE;
	l = cmk_be32_get(r->p + r->off);
	r->off += 4;
	*f = NULL;
	*n = 0;
	if (l == CMK_FIELD_ABSENT)
		return 1;
	if (l > r->len - r->off)
		return CMK_ERR_STORE;
	*f = r->p + r->off;
	*n = l;
	r->off += l;
	return 0;
}

/* A required name field pointing into the buffer. */
static int rd_name(struct rd *r, const char *name, size_t max, const char **s, size_t *n)
{
	const uint8_t *f;
	int rc = rd_field(r, name, &f, n);

	if (rc != 0 || *n > max || memchr(f, '\0', *n) != NULL)
		return CMK_ERR_STORE;
	*s = (const char *)f;
	return 0;
}

/* A required string copied into a fixed array of `cap` bytes (NUL included). */
static int rd_fixed(struct rd *r, const char *name, char *dst, size_t cap)
{
	const char *s;
	size_t n;
	int rc = rd_name(r, name, cap - 1, &s, &n);

	if (rc != 0)
		return rc;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* An optional string: absent stays NULL. */
static int rd_str(struct rd *r, const char *name, char **dst)
{
	const uint8_t *f;
	size_t n;
	int rc = rd_field(r, name, &f, &n);

	if (rc == 1)
		return 0;
	if (rc != 0 || memchr(f, '\0', n) != NULL)
		return CMK_ERR_STORE;
	if ((*dst = malloc(n + 1)) == NULL)
		return CMK_ERR_NOMEM;
	memcpy(*dst, f, n);
	(*dst)[n] = '\0';
	return 0;
}

/* Optional bytes; present but empty still gives a non-NULL pointer. */
static int rd_bytes(struct rd *r, const char *name, uint8_t **dst, size_t *dst_len)
{
	const uint8_t *f;
	size_t n;
	int rc = rd_field(r, name, &f, &n);

	if (rc == 1)
		return 0;
	if (rc != 0)
		return rc;
	if ((*dst = malloc(n > 0 ? n : 1)) == NULL)
		return CMK_ERR_NOMEM;
	memcpy(*dst, f, n);
	*dst_len = n;
	return 0;
}

/* A fixed-width big-endian unsigned integer of `width` bytes (1, 4 or 8). */
static int rd_uint(struct rd *r, const char *name, size_t width, uint64_t *v)
{
	const uint8_t *f;
	size_t n;

	if (rd_field(r, name, &f, &n) != 0 || n != width)
		return CMK_ERR_STORE;
	*v = 0;
	for (size_t i = 0; i < n; i++)
		*v = (*v << 8) | f[i];
	return 0;
}

static int rd_i64(struct rd *r, const char *name, int64_t *v)
{
	uint64_t u;
	int rc = rd_uint(r, name, 8, &u);

	*v = (int64_t)u;
	return rc;
}

static int rd_u32(struct rd *r, const char *name, uint32_t *v)
{
	uint64_t u;
	int rc = rd_uint(r, name, 4, &u);

	*v = (uint32_t)u;
	return rc;
}

static int rd_status(struct rd *r, enum cmk_status *st)
{
	uint64_t u;

	if (rd_uint(r, "status", 1, &u) != 0 || u >= CMK_ST_COUNT)
		return CMK_ERR_STORE;
	*st = (enum cmk_status)u;
	return 0;
}

/* Fields appended by newer code are skipped, but they must still be well formed. */
static int rd_rest(struct rd *r)
{
	const uint8_t *f;
	size_t n;

	while (r->off < r->len)
		if (rd_field(r, "trailing field", &f, &n) < 0)
			return CMK_ERR_STORE;
	return 0;
}

int cmk_codec_cert_keys(const void *buf, size_t len, struct cmk_cert_keys *k)
{
	struct rd r;

	memset(k, 0, sizeof(*k));
	if (rd_start(&r, buf, len) != 0 ||
	    rd_name(&r, "tenant", CMK_TENANT_MAX, &k->tenant, &k->tenant_len) != 0 ||
	    rd_name(&r, "type", CMK_TYPE_MAX, &k->type, &k->type_len) != 0 ||
	    rd_status(&r, &k->status) != 0 ||
	    rd_name(&r, "serial", CMK_SERIAL_MAX - 1, &k->serial, &k->serial_len) != 0 ||
	    rd_i64(&r, "renew_at", &k->renew_at) != 0)
		return CMK_ERR_STORE;
	/* The flags come after the fields in between (fingerprint .. attempts), read past unchecked. */
	for (int i = C_FPR; i < C_FLAGS; i++) {
		const uint8_t *f;
		size_t n;

		if (rd_field(&r, "field before flags", &f, &n) < 0)
			return CMK_ERR_STORE;
	}
	if (rd_u32(&r, "flags", &k->flags) != 0)
		return CMK_ERR_STORE;
	return 0;
}

int cmk_codec_cert_decode(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out)
{
	uint32_t slot;

	return cmk_codec_cert_decode_slot(id, buf, len, out, &slot);
}

int cmk_codec_cert_decode_slot(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out,
			       uint32_t *key_slot)
{
	struct cmk_cert_refs refs;
	int rc = cmk_codec_cert_decode_refs(id, buf, len, out, &refs);

	*key_slot = refs.key_slot;
	/* A caller that cannot fetch a chain kept apart sees the record without it. */
	return rc;
}

/* The optional chain id: absent, or exactly CMK_CHAIN_ID_LEN bytes. */
static int rd_chain_id(struct rd *r, struct cmk_cert_refs *refs)
{
	const uint8_t *f;
	size_t n;
	int rc = rd_field(r, "chain_id", &f, &n);

	if (rc == 1)
		return 0;
	if (rc != 0 || n != CMK_CHAIN_ID_LEN)
		return CMK_ERR_STORE;
	memcpy(refs->chain_id, f, n);
	refs->has_chain_id = true;
	return 0;
}

int cmk_codec_cert_decode_refs(uint64_t id, const void *buf, size_t len, struct cmk_cert_record *out,
			       struct cmk_cert_refs *refs)
{
	uint32_t *key_slot = &refs->key_slot;
	struct rd r;
	int64_t supersedes;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(refs, 0, sizeof(*refs));
	if ((rc = rd_start(&r, buf, len)) != 0 ||
	    (rc = rd_fixed(&r, "tenant", out->tenant, sizeof(out->tenant))) != 0 ||
	    (rc = rd_fixed(&r, "type", out->type, sizeof(out->type))) != 0 ||
	    (rc = rd_status(&r, &out->status)) != 0 ||
	    (rc = rd_fixed(&r, "serial", out->serial, sizeof(out->serial))) != 0 ||
	    (rc = rd_i64(&r, "renew_at", &out->renew_at)) != 0 ||
	    (rc = rd_fixed(&r, "fingerprint", out->fingerprint, sizeof(out->fingerprint))) != 0 ||
	    (rc = rd_str(&r, "subject", &out->subject)) != 0 ||
	    (rc = rd_i64(&r, "not_before", &out->not_before)) != 0 ||
	    (rc = rd_i64(&r, "not_after", &out->not_after)) != 0 ||
	    (rc = rd_i64(&r, "created_at", &out->created_at)) != 0 ||
	    (rc = rd_i64(&r, "activated_at", &out->activated_at)) != 0 ||
	    (rc = rd_i64(&r, "revoked_at", &out->revoked_at)) != 0 ||
	    (rc = rd_i64(&r, "updated_at", &out->updated_at)) != 0 ||
	    (rc = rd_i64(&r, "supersedes", &supersedes)) != 0 ||
	    (rc = rd_u32(&r, "attempts", &out->attempts)) != 0 ||
	    (rc = rd_u32(&r, "flags", &out->flags)) != 0 ||
	    (rc = rd_str(&r, "last_error", &out->last_error)) != 0 ||
	    (rc = rd_str(&r, "cert_pem", &out->cert_pem)) != 0 ||
	    (rc = rd_str(&r, "chain_pem", &out->chain_pem)) != 0 ||
	    (rc = rd_bytes(&r, "sealed_key", &out->sealed_key, &out->sealed_key_len)) != 0 ||
	    (r.off < r.len && (rc = rd_u32(&r, "key_slot", key_slot)) != 0) ||
	    (r.off < r.len && (rc = rd_chain_id(&r, refs)) != 0) ||
	    (rc = rd_rest(&r)) != 0)
		goto out;
	out->supersedes = (uint64_t)supersedes;
	out->id = id;
out:
	if (rc != 0) {
		cmk_cert_record_clear(out);
		if (rc == CMK_ERR_STORE)
			rc = cmk_fail(rc, "store: corrupt certificate record %" PRIu64 " (field %s)", id, r.field);
	}
	return rc;
}

/* Field order of keystore records, version 1; the endpoints follow their count and end the record. */
enum { K_TENANT, K_TYPE, K_VERIFY, K_CREATED, K_SERVER_CA, K_N_ENDPOINTS, K_NFIXED };

int cmk_codec_keystore_encode(const struct cmk_keystore_record *rec, uint8_t **buf, size_t *len)
{
	uint8_t verify = (uint8_t)rec->verify, created[8], count[4];
	struct field *f;
	int rc;

	if (!is_terminated(rec->tenant, sizeof(rec->tenant)) || !is_terminated(rec->type, sizeof(rec->type)))
		return cmk_fail(CMK_ERR_INVALID, "store: keystore record: a name field is not terminated");
	if ((unsigned)rec->verify > CMK_VERIFY_NONE || rec->n_endpoints > UINT32_MAX ||
	    (rec->n_endpoints > 0 && rec->endpoints == NULL))
		return cmk_fail(CMK_ERR_INVALID, "store: keystore %s/%s: bad verify mode or endpoint list",
				rec->tenant, rec->type);
	for (size_t i = 0; i < rec->n_endpoints; i++)
		if (rec->endpoints[i] == NULL)
			return cmk_fail(CMK_ERR_INVALID, "store: keystore %s/%s: endpoint %zu is NULL", rec->tenant,
					rec->type, i);
	if ((f = calloc(K_NFIXED + rec->n_endpoints, sizeof(*f))) == NULL)
		return CMK_ERR_NOMEM;
	cmk_be64_put(created, (uint64_t)rec->created_at);
	cmk_be32_put(count, (uint32_t)rec->n_endpoints);
	f[K_TENANT] = f_str(rec->tenant);
	f[K_TYPE] = f_str(rec->type);
	f[K_VERIFY] = f_bytes(&verify, 1);
	f[K_CREATED] = f_bytes(created, 8);
	f[K_SERVER_CA] = f_str(rec->server_ca_pem);
	f[K_N_ENDPOINTS] = f_bytes(count, 4);
	for (size_t i = 0; i < rec->n_endpoints; i++)
		f[K_NFIXED + i] = f_str(rec->endpoints[i]);
	rc = encode_fields(f, K_NFIXED + rec->n_endpoints, buf, len);
	free(f);
	return rc;
}

static int rd_endpoints(struct rd *r, struct cmk_keystore_record *out)
{
	uint32_t n;
	int rc;

	if ((rc = rd_u32(r, "endpoint count", &n)) != 0)
		return rc;
	/* Each endpoint takes at least its 4-byte length: a count the buffer cannot hold is damage. */
	if (n > (r->len - r->off) / 4)
		return CMK_ERR_STORE;
	if (n == 0)
		return 0;
	if ((out->endpoints = calloc(n, sizeof(char *))) == NULL)
		return CMK_ERR_NOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if ((rc = rd_str(r, "endpoint", &out->endpoints[i])) != 0)
			return rc;
		out->n_endpoints++;
		if (out->endpoints[i] == NULL)
			return CMK_ERR_STORE;
	}
	return 0;
}

int cmk_codec_keystore_decode(const void *buf, size_t len, struct cmk_keystore_record *out)
{
	struct rd r;
	uint64_t verify;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = rd_start(&r, buf, len)) != 0 ||
	    (rc = rd_fixed(&r, "tenant", out->tenant, sizeof(out->tenant))) != 0 ||
	    (rc = rd_fixed(&r, "type", out->type, sizeof(out->type))) != 0 ||
	    (rc = rd_uint(&r, "verify", 1, &verify)) != 0 ||
	    (rc = rd_i64(&r, "created_at", &out->created_at)) != 0 ||
	    (rc = rd_str(&r, "server_ca_pem", &out->server_ca_pem)) != 0 ||
	    (rc = rd_endpoints(&r, out)) != 0 ||
	    (rc = rd_rest(&r)) != 0)
		goto out;
	if (verify > CMK_VERIFY_NONE) {
		r.field = "verify";
		rc = CMK_ERR_STORE;
		goto out;
	}
	out->verify = (enum cmk_verify)verify;
out:
	if (rc != 0) {
		/* Name the record by what could be read of its key fields; they are not secret. */
		if (rc == CMK_ERR_STORE)
			rc = cmk_fail(rc, "store: corrupt keystore record \"%s/%s\" (field %s)", out->tenant,
				      out->type, r.field);
		cmk_keystore_record_clear(out);
	}
	return rc;
}

int cmk_codec_change_encode(const struct cmk_change *ch, uint8_t **buf, size_t *len)
{
	uint8_t t[8];
	struct field f[3];

	if (!is_terminated(ch->tenant, sizeof(ch->tenant)) || !is_terminated(ch->type, sizeof(ch->type)))
		return cmk_fail(CMK_ERR_INVALID, "store: change: a name field is not terminated");
	cmk_be64_put(t, (uint64_t)ch->time);
	f[0] = f_str(ch->tenant);
	f[1] = f_str(ch->type);
	f[2] = f_bytes(t, 8);
	return encode_fields(f, 3, buf, len);
}

int cmk_codec_change_decode(uint64_t seq, const void *buf, size_t len, struct cmk_change *out)
{
	struct rd r;

	memset(out, 0, sizeof(*out));
	if (rd_start(&r, buf, len) != 0 ||
	    rd_fixed(&r, "tenant", out->tenant, sizeof(out->tenant)) != 0 ||
	    rd_fixed(&r, "type", out->type, sizeof(out->type)) != 0 ||
	    rd_i64(&r, "time", &out->time) != 0 ||
	    rd_rest(&r) != 0) {
		memset(out, 0, sizeof(*out));
		return cmk_fail(CMK_ERR_STORE, "store: corrupt change record %" PRIu64 " (field %s)", seq, r.field);
	}
	out->seq = seq;
	return 0;
}
