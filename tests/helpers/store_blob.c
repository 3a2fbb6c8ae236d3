/*
 * store_blob STORE_DIR TENANT TYPE - a test helper: print, in hex, the
 * sealed private key of every record of (TENANT, TYPE) that still has one,
 * one line per record ("<id> <hex>"), so a test can look for copies of it
 * in the store's files after the key was destroyed.
 * store_blob STORE_DIR --pool POOL - the same for every free key of a key
 * pool ("<id> <public key sha256> <hex>"), read in a transaction that is
 * then aborted: nothing changes.
 * Nothing secret: the blobs are sealed.  Exits 2 on a usage error, 1 when
 * the store cannot be read.
 */
#include <stdio.h>
#include <string.h>

#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/store.h"

static int print_blob(const struct cmk_cert_record *rec, void *arg)
{
	char hex[3];

	(void)arg;
	if (rec->sealed_key == NULL)
		return 0;
	printf("%llu ", (unsigned long long)rec->id);
	for (size_t i = 0; i < rec->sealed_key_len; i++) {
		cmk_hex(&rec->sealed_key[i], 1, hex);
		fputs(hex, stdout);
	}
	putchar('\n');
	return 0;
}

static void hex_out(const uint8_t *p, size_t n)
{
	char hex[3];

	for (size_t i = 0; i < n; i++) {
		cmk_hex(&p[i], 1, hex);
		fputs(hex, stdout);
	}
}

/* Claim every free entry in one transaction, print each, abort: the pool is as it was. */
static int print_pool(struct cmk_store *st, const char *pool)
{
	struct cmk_txn *txn = NULL;
	int rc;

	if ((rc = cmk_store_begin(st, &txn)) != 0)
		return rc;
	for (;;) {
		struct cmk_pool_entry e = { 0 };

		if ((rc = cmk_store_pool_claim(txn, pool, &e)) != 0)
			break;
		printf("%llu ", (unsigned long long)e.id);
		hex_out(e.public_sha256, sizeof(e.public_sha256));
		putchar(' ');
		hex_out(e.sealed_key, e.sealed_key_len);
		putchar('\n');
		cmk_pool_entry_clear(&e);
	}
	cmk_store_abort(txn);
	return rc == CMK_ERR_NOTFOUND ? 0 : rc;
}

int main(int argc, char **argv)
{
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = -1 };
	struct cmk_store *st;
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: store_blob STORE_DIR TENANT TYPE | store_blob STORE_DIR --pool POOL\n");
		return 2;
	}
	if (strcmp(argv[2], "--pool") == 0) {
		if (cmk_store_open(argv[1], &st) != 0 || (rc = print_pool(st, argv[3])) != 0) {
			fprintf(stderr, "store_blob: %s\n", cmk_errdetail());
			return 1;
		}
		cmk_store_close(st);
		return 0;
	}
	f.tenant = argv[2];
	f.type = argv[3];
	if (cmk_store_open(argv[1], &st) != 0 || (rc = cmk_store_cert_each(st, NULL, &f, print_blob, NULL)) != 0) {
		fprintf(stderr, "store_blob: %s\n", cmk_errdetail());
		return 1;
	}
	cmk_store_close(st);
	return 0;
}
