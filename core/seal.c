/*
 * seal.c - sealing private keys with a tenant-specific key (DESIGN §6).
 *
 * Provider "local": the 32-byte master key is read once from its file into
 * a page of its own that is locked in memory and left out of core dumps.
 * Each seal or unseal derives the tenant key with HKDF-SHA256 (salt = the
 * store id, info = "cmkcert tenant v1" || tenant; for the blobs of no tenant,
 * info = "cmkcert pool v1" or "cmkcert token v1"), uses it for one
 * AES-256-GCM operation and wipes it.  Only crypto.h primitives are used
 * here; mbedTLS stays in the crypto backend.
 *
 * Blob layout (all integers big-endian):
 *
 *   0   4  magic "CMKS"
 *   4   1  format version (1)
 *   5   1  provider id (1 = local)
 *   6   8  key id: the first 8 bytes of SHA-256(master key)
 *   14  4  key version (1)
 *   18  12 random nonce
 *   30  n  ciphertext, followed by the 16-byte GCM tag
 *
 * The key id lets a blob sealed under another master key be reported as
 * such instead of as a generic authentication failure; version, provider
 * and key version leave room to re-wrap blobs later.  The associated data
 * is the 18 header bytes before the nonce, then the tenant, the type, the
 * record id and the serial, each string prefixed by its 32-bit length so
 * no two different field lists encode alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/seal.h"
#include "cmkcert/util.h"

#define MASTER_LEN 32
#define KEY_ID_LEN 8
#define NONCE_LEN 12
#define TAG_LEN 16
#define HEADER_LEN 18                          /* magic .. key version: the part bound as AAD */
#define NONCE_OFF HEADER_LEN
#define CT_OFF (NONCE_OFF + NONCE_LEN)
#define OVERHEAD (CT_OFF + TAG_LEN)
#define FORMAT_VERSION 1
#define PROVIDER_LOCAL 1
#define KEY_VERSION 1
#define FIELD_MAX 255                          /* longest tenant, type or serial accepted */
#define AAD_MAX (HEADER_LEN + 3 * (4 + FIELD_MAX) + 8)
#define PLAINTEXT_MAX (1u << 20)               /* far above any private key PEM */

static const char magic[4] = { 'C', 'M', 'K', 'S' };
static const char info_prefix[] = "cmkcert tenant v1";

struct cmk_sealer {
	uint8_t *master;                       /* MASTER_LEN bytes at the start of page_len bytes of their own */
	size_t page_len;
	uint8_t key_id[KEY_ID_LEN];
	uint8_t store_id[CMK_STORE_ID_LEN];
};

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- the master key ----------------------------------------------------- */

/*
 * A page for the master key alone, so locking and unlocking it cannot
 * affect other data, and so it can be excluded from core dumps.  A refused
 * mlock (no CAP_IPC_LOCK, RLIMIT_MEMLOCK) is reported once and tolerated.
 */
static uint8_t *secret_page(size_t *len)
{
	static atomic_flag warned = ATOMIC_FLAG_INIT;
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	*len = page > 0 ? (size_t)page : 4096;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, *len, MADV_DONTDUMP);
	if (mlock(p, *len) != 0 && !atomic_flag_test_and_set(&warned))
		cmk_log(CMK_LOG_WARN, "seal: cannot lock the master key in memory (%s); it may be swapped out",
			strerror(errno));
	return p;
}

static void secret_page_free(uint8_t *p, size_t len)
{
	if (p == NULL)
		return;
	cmk_wipe(p, len);
	(void)munlock(p, len);
	(void)munmap(p, len);
}

/*
 * cmk_check_secret_file() has looked at the path; the opened file is
 * checked again through its descriptor, since the path could have been
 * replaced in between.  Exactly MASTER_LEN bytes, read straight into the
 * locked page.
 */
static int read_master_key(const char *path, uint8_t *out)
{
	struct stat sb;
	size_t got = 0;
	uint8_t extra;
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cmk_fail(CMK_ERR_IO, "seal: master key %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0 ||
	    (sb.st_uid != 0 && sb.st_uid != geteuid())) {
		rc = cmk_fail(CMK_ERR_PERM, "seal: master key %s changed while it was opened; its owner or mode is "
			      "no longer safe", path);
		goto out;
	}
	if (sb.st_size != MASTER_LEN) {
		rc = cmk_fail(CMK_ERR_CONFIG, "seal: master key %s holds %lld bytes; it must hold exactly %d",
			      path, (long long)sb.st_size, MASTER_LEN);
		goto out;
	}
	while (got < MASTER_LEN) {
		n = read(fd, out + got, MASTER_LEN - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = cmk_fail(CMK_ERR_IO, "seal: master key %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	/* The size was checked before reading; a file that changed since is not trusted. */
	if (got != MASTER_LEN || read(fd, &extra, 1) != 0)
		rc = cmk_fail(CMK_ERR_CONFIG, "seal: master key %s changed size while it was read", path);
out:
	if (rc != 0)
		cmk_wipe(out, MASTER_LEN);
	close(fd);
	return rc;
}

int cmk_sealer_open(const struct cmk_config *cfg, const uint8_t store_id[CMK_STORE_ID_LEN], struct cmk_sealer **out)
{
	struct cmk_sealer *s = NULL;
	const char *path;
	uint8_t digest[32];
	char key_id[2 * KEY_ID_LEN + 1];
	int rc;

	*out = NULL;
	if (cfg == NULL || store_id == NULL)
		return cmk_fail(CMK_ERR_INVALID, "seal: no configuration or store id given");
	if (cfg->keys.provider == NULL || strcmp(cfg->keys.provider, "local") != 0)
		return cmk_fail(CMK_ERR_CONFIG, "seal: [keys] provider \"%s\" is not supported (only \"local\")",
				cfg->keys.provider != NULL ? cfg->keys.provider : "");
	if ((path = cfg->keys.master_key) == NULL || *path == '\0')
		return cmk_fail(CMK_ERR_CONFIG, "seal: [keys] master_key is not set");
	if ((rc = cmk_check_secret_file(path)) != 0)
		return rc;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return CMK_ERR_NOMEM;
	if ((s->master = secret_page(&s->page_len)) == NULL) {
		rc = cmk_fail(CMK_ERR_NOMEM, "seal: cannot map a page for the master key: %s", strerror(errno));
		goto out;
	}
	if ((rc = read_master_key(path, s->master)) != 0)
		goto out;
	cmk_sha256(s->master, MASTER_LEN, digest);
	memcpy(s->key_id, digest, KEY_ID_LEN);
	cmk_wipe(digest, sizeof(digest));
	memcpy(s->store_id, store_id, CMK_STORE_ID_LEN);
	cmk_hex(s->key_id, KEY_ID_LEN, key_id);
	cmk_log(CMK_LOG_DEBUG, "seal: local provider ready, master key id %s", key_id);
	*out = s;
	s = NULL;
out:
	cmk_sealer_free(s);
	return rc;
}

void cmk_sealer_free(struct cmk_sealer *s)
{
	if (s == NULL)
		return;
	secret_page_free(s->master, s->page_len);
	cmk_freezero(s, sizeof(*s));
}

/* ---- keys and associated data ------------------------------------------- */

/*
 * HKDF-SHA256(ikm = master, salt = store id, info = "cmkcert tenant v1" || tenant);
 * for the names of blobs that belong to no tenant ("#pool", "#token"),
 * info = "cmkcert pool v1" / "cmkcert token v1".  Caller wipes `key`.
 */
static int tenant_key(const struct cmk_sealer *s, const char *tenant, uint8_t key[32])
{
	uint8_t info[sizeof(info_prefix) - 1 + FIELD_MAX];
	size_t plen = sizeof(info_prefix) - 1, tlen = strlen(tenant);
	const char *own = strcmp(tenant, CMK_SEAL_POOL) == 0 ? "cmkcert pool v1"
			  : strcmp(tenant, CMK_SEAL_TOKEN) == 0 ? "cmkcert token v1" : NULL;

	if (own != NULL)
		return cmk_hkdf_sha256(s->store_id, CMK_STORE_ID_LEN, s->master, MASTER_LEN, (const uint8_t *)own,
				       strlen(own), key, 32);
	/* No tenant id starts with '#': such a name is one this file does not know. */
	if (tenant[0] == '#')
		return cmk_fail(CMK_ERR_INVALID, "seal: unknown binding name");
	memcpy(info, info_prefix, plen);
	memcpy(info + plen, tenant, tlen);
	return cmk_hkdf_sha256(s->store_id, CMK_STORE_ID_LEN, s->master, MASTER_LEN, info, plen + tlen, key, 32);
}

int cmk_sealer_audit_key(const struct cmk_sealer *s, uint8_t key[32])
{
	static const char info[] = "cmkcert audit v1";

	return cmk_hkdf_sha256(s->store_id, CMK_STORE_ID_LEN, s->master, MASTER_LEN, (const uint8_t *)info,
			       sizeof(info) - 1, key, 32);
}

static int check_field(const char *name, const char *value, bool may_be_empty)
{
	if (value == NULL || (!may_be_empty && *value == '\0'))
		return cmk_fail(CMK_ERR_INVALID, "seal: %s is missing", name);
	if (strlen(value) > FIELD_MAX)
		return cmk_fail(CMK_ERR_INVALID, "seal: %s is longer than %d characters", name, FIELD_MAX);
	return 0;
}

static size_t put_field(uint8_t *p, const char *value)
{
	size_t len = strlen(value);

	put_be32(p, (uint32_t)len);
	memcpy(p + 4, value, len);
	return 4 + len;
}

/* Canonical associated data for a blob whose header starts at `header`; out holds AAD_MAX bytes. */
static int build_aad(const uint8_t *header, const struct cmk_seal_aad *aad, uint8_t *out, size_t *out_len)
{
	size_t pos = HEADER_LEN;
	int rc;

	if (aad == NULL)
		return cmk_fail(CMK_ERR_INVALID, "seal: no binding (tenant, type, record, serial) given");
	if ((rc = check_field("tenant", aad->tenant, false)) != 0 || (rc = check_field("type", aad->type, false)) != 0 ||
	    (rc = check_field("serial", aad->serial, true)) != 0)
		return rc;
	memcpy(out, header, HEADER_LEN);
	pos += put_field(out + pos, aad->tenant);
	pos += put_field(out + pos, aad->type);
	put_be32(out + pos, (uint32_t)(aad->record_id >> 32));
	put_be32(out + pos + 4, (uint32_t)aad->record_id);
	pos += 8;
	pos += put_field(out + pos, aad->serial);
	*out_len = pos;
	return 0;
}

/* ---- seal and unseal ---------------------------------------------------- */

static void write_header(const struct cmk_sealer *s, uint8_t *p)
{
	memcpy(p, magic, sizeof(magic));
	p[4] = FORMAT_VERSION;
	p[5] = PROVIDER_LOCAL;
	memcpy(p + 6, s->key_id, KEY_ID_LEN);
	put_be32(p + 14, KEY_VERSION);
}

/* Everything that can be told about a blob before trying to open it. */
static int check_header(const struct cmk_sealer *s, const uint8_t *blob, size_t blob_len)
{
	char theirs[2 * KEY_ID_LEN + 1], ours[2 * KEY_ID_LEN + 1];

	if (blob == NULL || blob_len < OVERHEAD)
		return cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key is truncated (%zu bytes, at least %d expected)",
				blob != NULL ? blob_len : 0, OVERHEAD);
	if (memcmp(blob, magic, sizeof(magic)) != 0)
		return cmk_fail(CMK_ERR_VERIFY, "unseal: not a sealed key (bad magic)");
	if (blob[4] != FORMAT_VERSION)
		return cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key format version %u is not supported (this build "
				"reads version %d)", blob[4], FORMAT_VERSION);
	if (blob[5] != PROVIDER_LOCAL)
		return cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key belongs to provider id %u, not to the local "
				"provider (%d)", blob[5], PROVIDER_LOCAL);
	if (memcmp(blob + 6, s->key_id, KEY_ID_LEN) != 0) {
		cmk_hex(blob + 6, KEY_ID_LEN, theirs);
		cmk_hex(s->key_id, KEY_ID_LEN, ours);
		return cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key was made with another master key (key id %s; "
				"the configured master key has id %s)", theirs, ours);
	}
	if (get_be32(blob + 14) != KEY_VERSION)
		return cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key version %u is not known (this build has "
				"version %d)", (unsigned)get_be32(blob + 14), KEY_VERSION);
	return 0;
}

int cmk_seal(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *pt, size_t pt_len,
	     uint8_t **blob, size_t *blob_len)
{
	uint8_t key[32], aad_buf[AAD_MAX], *out = NULL;
	size_t aad_len = 0;
	int rc;

	*blob = NULL;
	*blob_len = 0;
	if (s == NULL || pt == NULL || pt_len == 0)
		return cmk_fail(CMK_ERR_INVALID, "seal: nothing to seal");
	if (pt_len > PLAINTEXT_MAX)
		return cmk_fail(CMK_ERR_INVALID, "seal: %zu bytes is more than the %u a sealed key may hold",
				pt_len, PLAINTEXT_MAX);
	if ((out = malloc(OVERHEAD + pt_len)) == NULL)
		return CMK_ERR_NOMEM;
	write_header(s, out);
	/* A random 96-bit nonce per blob; with a fresh tenant key per store, collisions are out of reach. */
	if ((rc = build_aad(out, aad, aad_buf, &aad_len)) != 0 || (rc = cmk_random(out + NONCE_OFF, NONCE_LEN)) != 0 ||
	    (rc = tenant_key(s, aad->tenant, key)) != 0)
		goto out;
	rc = cmk_aead_seal(key, out + NONCE_OFF, aad_buf, aad_len, pt, pt_len, out + CT_OFF);
out:
	cmk_wipe(key, sizeof(key));
	if (rc != 0) {
		free(out);
		return rc;
	}
	*blob = out;
	*blob_len = OVERHEAD + pt_len;
	return 0;
}

size_t cmk_unseal_size(size_t blob_len)
{
	return blob_len < OVERHEAD ? 0 : blob_len - OVERHEAD;
}

int cmk_unseal_into(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *blob, size_t blob_len,
		    uint8_t *pt, size_t cap, size_t *pt_len)
{
	uint8_t key[32], aad_buf[AAD_MAX];
	size_t aad_len = 0, n;
	int rc;

	*pt_len = 0;
	if (s == NULL)
		return cmk_fail(CMK_ERR_INVALID, "unseal: no sealer");
	if ((rc = check_header(s, blob, blob_len)) != 0)
		goto out;
	n = cmk_unseal_size(blob_len);
	if (pt == NULL || cap < n) {
		rc = cmk_fail(CMK_ERR_INVALID, "unseal: buffer too small (%zu bytes for a %zu-byte key)",
			      pt != NULL ? cap : 0, n);
		goto out;
	}
	if ((rc = build_aad(blob, aad, aad_buf, &aad_len)) != 0 || (rc = tenant_key(s, aad->tenant, key)) != 0)
		goto out;
	rc = cmk_aead_open(key, blob + NONCE_OFF, aad_buf, aad_len, blob + CT_OFF, n + TAG_LEN, pt);
	if (rc == CMK_ERR_VERIFY)
		rc = cmk_fail(CMK_ERR_VERIFY, "unseal: sealed key does not belong to this tenant/record, or was altered");
	if (rc == 0)
		*pt_len = n;
out:
	cmk_wipe(key, sizeof(key));
	if (rc != 0)
		cmk_wipe(pt, cap);
	return rc;
}

int cmk_unseal(struct cmk_sealer *s, const struct cmk_seal_aad *aad, const uint8_t *blob, size_t blob_len,
	       uint8_t **pt, size_t *pt_len)
{
	uint8_t *buf;
	size_t n, len = 0;
	int rc;

	*pt = NULL;
	*pt_len = 0;
	if (s == NULL)
		return cmk_fail(CMK_ERR_INVALID, "unseal: no sealer");
	if ((rc = check_header(s, blob, blob_len)) != 0)
		return rc;
	n = cmk_unseal_size(blob_len);
	if ((buf = malloc(n + 1)) == NULL)
		return CMK_ERR_NOMEM;
	if ((rc = cmk_unseal_into(s, aad, blob, blob_len, buf, n, &len)) != 0) {
		cmk_freezero(buf, n + 1);
		return rc;
	}
	buf[len] = '\0';
	*pt = buf;
	*pt_len = len;
	return 0;
}
