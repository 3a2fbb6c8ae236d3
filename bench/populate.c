/*
 * populate.c - fill a store with active certificates for the benchmarks.
 *
 *   populate CONF PAIRS.pem CHAIN.pem [PREFIX]
 *
 * PAIRS.pem holds private key / certificate pairs (bench/gencerts.py), read
 * a block at a time.  Each
 * pair becomes one active record of tenant PREFIX<n> (default "bench"),
 * type aws_kms, with its key sealed exactly as the lifecycle seals keys
 * (bound to tenant, type, record id and serial) and its renewal time set as
 * activation sets it (none is due yet).  Records are written 250
 * per transaction through the ordinary store API, so the change log and
 * indexes are the ones the CLI would produce.  Prints the number stored.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/config.h"
#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/seal.h"
#include "cmkcert/store.h"
#include "cmkcert/util.h"

#define PER_TXN 250
#define FILE_MAX (1u << 20)

/*
 * Next PEM block ("-----BEGIN" up to and including its "-----END ...-----"
 * line) read from f a line at a time: the pairs of a million certificates
 * are far more than one read should hold.  NULL at the end of the file.
 */
static char *next_block(FILE *f)
{
	char *line = NULL, *out = NULL;
	size_t cap = 0, len = 0;
	ssize_t n;
	bool in = false;

	while ((n = getline(&line, &cap, f)) > 0) {
		char *grown;

		if (!in && strncmp(line, "-----BEGIN", 10) != 0)
			continue;
		in = true;
		if ((grown = realloc(out, len + (size_t)n + 1)) == NULL)
			break;
		out = grown;
		memcpy(out + len, line, (size_t)n + 1);
		len += (size_t)n;
		if (strncmp(line, "-----END", 8) == 0) {
			cmk_strfreezero(line);
			return out;
		}
	}
	cmk_strfreezero(line);
	cmk_strfreezero(out);
	return NULL;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "populate: %s: %s: %s\n", what, cmk_strerror(rc), cmk_errdetail());
	return 1;
}

static int store_one(struct cmk_txn *txn, const struct cmk_config *cfg, struct cmk_sealer *sealer,
		     const char *prefix, size_t n, char *key, char *cert, char *chain)
{
	struct cmk_cert_record rec;
	struct cmk_cert_info info;
	struct cmk_seal_aad aad;
	int rc;

	memset(&rec, 0, sizeof(rec));
	if ((rc = cmk_cert_parse(cert, &info)) != 0)
		return rc;
	snprintf(rec.tenant, sizeof(rec.tenant), "%s%05zu", prefix, n);
	snprintf(rec.type, sizeof(rec.type), "aws_kms");
	snprintf(rec.serial, sizeof(rec.serial), "%s", info.serial);
	snprintf(rec.fingerprint, sizeof(rec.fingerprint), "%s", info.fingerprint);
	rec.status = CMK_ST_ACTIVE;
	rec.subject = info.subject;
	rec.not_before = info.not_before;
	rec.not_after = info.not_after;
	rec.renew_at = cmk_renew_at(cfg, rec.not_before, rec.not_after, (double)(n % 1000) / 1000.0);
	rec.created_at = rec.activated_at = rec.updated_at = cmk_now();
	rec.cert_pem = cert;
	rec.chain_pem = chain;
	if ((rc = cmk_store_cert_next_id(txn, &rec.id)) != 0)
		goto out;
	aad = (struct cmk_seal_aad){ rec.tenant, rec.type, rec.id, rec.serial };
	if ((rc = cmk_seal(sealer, &aad, (const uint8_t *)key, strlen(key), &rec.sealed_key,
			   &rec.sealed_key_len)) != 0)
		goto out;
	rc = cmk_store_cert_put(txn, &rec);
out:
	free(rec.sealed_key);
	cmk_cert_info_clear(&info);
	return rc;
}

int main(int argc, char **argv)
{
	struct cmk_config *cfg = NULL;
	struct cmk_store *st = NULL;
	struct cmk_sealer *sealer = NULL;
	struct cmk_txn *txn = NULL;
	char *chain = NULL, *key = NULL, *cert = NULL;
	const char *prefix = argc > 4 ? argv[4] : "bench";
	FILE *pairs = NULL;
	size_t n = 0;
	int rc, ret = 1;

	if (argc < 4) {
		fprintf(stderr, "usage: populate CONF PAIRS.pem CHAIN.pem [PREFIX]\n");
		return 2;
	}
	if ((rc = cmk_config_load(argv[1], &cfg)) != 0)
		return fail("config", rc);
	if ((rc = cmk_read_file(argv[3], FILE_MAX, &chain, NULL)) != 0) {
		ret = fail("reading", rc);
		goto out;
	}
	if ((pairs = fopen(argv[2], "re")) == NULL) {
		fprintf(stderr, "populate: %s: %s\n", argv[2], strerror(errno));
		goto out;
	}
	if ((rc = cmk_store_open(cfg->store.path, &st)) != 0 ||
	    (rc = cmk_sealer_open(cfg, cmk_store_id(st), &sealer)) != 0) {
		ret = fail("store", rc);
		goto out;
	}
	for (; (key = next_block(pairs)) != NULL; n++) {
		if ((cert = next_block(pairs)) == NULL) {
			fprintf(stderr, "populate: key without certificate after pair %zu\n", n);
			goto out;
		}
		if (txn == NULL && (rc = cmk_store_begin(st, &txn)) != 0) {
			ret = fail("begin", rc);
			goto out;
		}
		if ((rc = store_one(txn, cfg, sealer, prefix, n, key, cert, chain)) != 0) {
			ret = fail("store record", rc);
			goto out;
		}
		cmk_strfreezero(key);
		free(cert);
		key = cert = NULL;
		if ((n + 1) % PER_TXN == 0) {
			rc = cmk_store_commit(txn);
			txn = NULL;
			if (rc != 0) {
				ret = fail("commit", rc);
				goto out;
			}
		}
	}
	if (txn != NULL) {
		rc = cmk_store_commit(txn);
		txn = NULL;
		if (rc != 0) {
			ret = fail("commit", rc);
			goto out;
		}
	}
	printf("%zu\n", n);
	ret = 0;
out:
	cmk_store_abort(txn);
	cmk_strfreezero(key);
	free(cert);
	if (pairs != NULL)
		fclose(pairs);
	free(chain);
	cmk_sealer_free(sealer);
	cmk_store_close(st);
	cmk_config_free(cfg);
	return ret;
}
