/*
 * op_query.c - reading certificates the way `cmkcert list` and `show` do,
 * for the CLI and the daemon's control socket alike: names are checked
 * before they reach the store, and a type may be given by an alias.
 */
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/names.h"
#include "lifecycle_int.h"

/* Check the names a filter or lookup gives and turn an alias into its template's type. */
static int canonical_names(struct cmk_ctx *ctx, const char *tenant, const char **type)
{
	const struct cmk_template *tpl;
	int rc;

	if (tenant != NULL && (rc = cmk_check_tenant("tenant_id", tenant)) != 0)
		return rc;
	if (*type != NULL) {
		if ((rc = cmk_check_type("type", *type)) != 0)
			return rc;
		if ((tpl = cmk_config_template(ctx->cfg, *type)) != NULL)
			*type = tpl->type;
	}
	return 0;
}

int cmk_cert_list(struct cmk_ctx *ctx, const struct cmk_cert_filter *f, cmk_cert_cb cb, void *arg)
{
	struct cmk_cert_filter c = *f;
	int rc;

	if ((rc = canonical_names(ctx, c.tenant, &c.type)) != 0)
		return rc;
	if (c.status >= CMK_ST_COUNT)
		return cmk_fail(CMK_ERR_INVALID, "status: out of range");
	return cmk_store_cert_each(ctx->store, NULL, &c, cb, arg);
}

int cmk_cert_current(struct cmk_ctx *ctx, const char *tenant, const char *type, struct cmk_cert_record *out)
{
	int rc;

	if (tenant == NULL || type == NULL)
		return cmk_fail(CMK_ERR_INVALID, "tenant_id and type are required");
	if ((rc = canonical_names(ctx, tenant, &type)) != 0)
		return rc;
	/* The active certificate, else the first record found in the order of the statuses. */
	rc = cmk_store_cert_find(ctx->store, NULL, tenant, type, CMK_ST_ACTIVE, out);
	for (int st = 0; rc == CMK_ERR_NOTFOUND && st < CMK_ST_COUNT; st++)
		rc = cmk_store_cert_find(ctx->store, NULL, tenant, type, (enum cmk_status)st, out);
	if (rc == CMK_ERR_NOTFOUND)
		cmk_fail(rc, "tenant %s has no %s certificate", tenant, type);
	return rc;
}

int cmk_prepare(struct cmk_ctx *ctx, bool needs_openbao, unsigned *recovered)
{
	int rc;

	*recovered = 0;
	if (needs_openbao && (rc = cmk_bao_check_files(ctx->cfg)) != 0)
		return rc;
	/* Whatever recovery could not finish now is left for the next run; it never fails the operation. */
	cmk_recover(ctx, recovered);
	return 0;
}
