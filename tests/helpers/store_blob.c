/*
 * store_blob STORE_DIR TENANT TYPE - a test helper: print, in hex, the
 * sealed private key of every record of (TENANT, TYPE) that still has one,
 * one line per record ("<id> <hex>"), so a test can look for copies of it
 * in the store's files after the key was destroyed.  Nothing secret: the
 * blobs are sealed.  Exits 2 on a usage error, 1 when the store cannot be
 * read.
 */
#include <stdio.h>

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

int main(int argc, char **argv)
{
	struct cmk_cert_filter f = { .tenant = NULL, .type = NULL, .status = -1 };
	struct cmk_store *st;
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: store_blob STORE_DIR TENANT TYPE\n");
		return 2;
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
