/*
 * cmd_pool.c - cmkcert pool fill and pool status: the key pool by hand
 * (pool.h).  Filling generates keys in this process, one after another;
 * cmkcertfs does the same in the background at low priority.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/log.h"
#include "cmkcert/pool.h"
#include "cmkcert/util.h"
#include "cli.h"

#define MAX_TYPES 32

/* Destroyed keys (discarded pool entries) leave the store's files now. */
static void shred(struct cmk_ctx *ctx)
{
	struct cmk_shred_stats st;

	if (cmk_store_shred_pending(ctx->store) && cmk_store_shred(ctx->store, &st) != 0)
		cmk_log(CMK_LOG_WARN, "shred: %s (the next run tries again)", cmk_errdetail());
}

static const char *mode_note(const struct cmk_ctx *ctx)
{
	return ctx->cfg->openbao.mode == CMK_MODE_SIGN ? NULL
	       : "[openbao] mode = issue: OpenBao makes every key, no pool is used";
}

/* Is spec the pool of one of the templates named (types or aliases)?  No names: every pool. */
static bool wanted(const struct cmk_ctx *ctx, const struct cmk_pool_spec *spec, char **types, size_t n)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		const struct cmk_template *tpl = cmk_config_template(ctx->cfg, types[i]);
		if (tpl != NULL && tpl->key_type == spec->type && tpl->key_bits == spec->bits)
			return true;
	}
	return false;
}

static int pool_fill(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "type", required_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmk_pool_spec *specs = NULL;
	struct cmk_ctx *ctx = NULL;
	char *types[MAX_TYPES];
	size_t n_types = 0, n_specs = 0;
	json_t *list = json_array();
	int c, rc = 0, ret = EXIT_OK;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (n_types == MAX_TYPES) {
				ret = cli_usage_error(cli, "pool fill: at most %d --type options", MAX_TYPES);
				goto out;
			}
			types[n_types++] = optarg;
			break;
		case 'j': cli->json = true; break;
		default: ret = cli_usage_error(cli, "pool fill: unknown option"); goto out;
		}
	}
	if (optind != argc) {
		ret = cli_usage_error(cli, "pool fill: unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if ((rc = cli_open_ctx(cli, &ctx)) != 0) {
		ret = cli_fail(cli, rc, "configuration");
		goto out;
	}
	for (size_t i = 0; i < n_types; i++) {
		if (cmk_config_template(ctx->cfg, types[i]) == NULL) {
			cmk_fail(CMK_ERR_INVALID, "--type \"%s\": no [template:%s] in %s", types[i], types[i],
				 ctx->cfg->path);
			ret = cli_fail(cli, CMK_ERR_INVALID, "pool fill");
			goto out;
		}
	}
	if ((rc = cmk_pool_specs(ctx->cfg, &specs, &n_specs)) != 0) {
		ret = cli_fail(cli, rc, "pool fill");
		goto out;
	}
	if (n_specs == 0 && !cli->json)
		cli_line(stdout, "%s", mode_note(ctx) ? mode_note(ctx)
						     : "no pool to fill: set [keys] pool_size (or a template's pool_size)");
	for (size_t i = 0; i < n_specs && rc == 0; i++) {
		struct cmk_pool_counts counts = { 0 };
		int64_t t0 = cmk_monotonic_ms();
		unsigned added = 0;

		if (!wanted(ctx, &specs[i], types, n_types))
			continue;
		rc = cmk_pool_fill(ctx->store, ctx->sealer, &specs[i], NULL, NULL, &added);
		if (rc == 0)
			rc = cmk_store_pool_counts(ctx->store, NULL, specs[i].name, &counts);
		if (rc != 0)
			break;
		if (cli->json)
			json_array_append_new(list, json_pack("{s:s, s:I, s:I, s:I, s:I}", "pool", specs[i].name,
							      "target", (json_int_t)specs[i].target, "added",
							      (json_int_t)added, "free", (json_int_t)counts.free, "ms",
							      (json_int_t)(cmk_monotonic_ms() - t0)));
		else
			cli_line(stdout, "%-10s %" PRIu64 " of %u keys ready (%u added in %" PRId64 " ms)",
				 specs[i].name, counts.free, specs[i].target, added, cmk_monotonic_ms() - t0);
	}
	shred(ctx);
	if (rc != 0) {
		ret = cli_fail(cli, rc, "pool fill");
		goto out;
	}
	if (cli->json) {
		cli_print_json(json_pack("{s:b, s:O}", "ok", 1, "pools", list));
	}
out:
	json_decref(list);
	free(specs);
	cmk_ctx_free(ctx);
	return ret;
}

/* --keys: every entry's public key, for checking that no key is used twice. */
struct keys_arg {
	json_t *by_pool;      /* pool name -> array */
};

static int key_json(const struct cmk_pool_entry *e, void *arg)
{
	struct keys_arg *a = arg;
	json_t *arr = json_object_get(a->by_pool, e->pool), *o;
	char hex[65], at[32];

	if (arr == NULL) {
		arr = json_array();
		json_object_set_new(a->by_pool, e->pool, arr);
	}
	cmk_hex(e->public_sha256, sizeof(e->public_sha256), hex);
	cmk_format_time(e->created_at, at, sizeof(at));
	o = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)e->id, "public_key_sha256", hex, "created_at", at);
	json_object_set_new(o, "claimed_by_pid", e->claim_pid ? json_integer(e->claim_pid) : json_null());
	json_array_append_new(arr, o);
	return 0;
}

static int pool_status(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "keys", no_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmk_pool_state *pools = NULL;
	struct keys_arg ka = { NULL };
	struct cmk_ctx *ctx = NULL;
	bool keys = false;
	size_t n = 0;
	unsigned reaped = 0;
	int c, rc, ret = EXIT_OK;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'j': cli->json = true; break;
		case 'K': keys = true; break;
		default: return cli_usage_error(cli, "pool status: unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(cli, "pool status: unexpected argument \"%s\"", argv[optind]);
	if (keys && !cli->json)
		return cli_usage_error(cli, "pool status: --keys goes with --json");
	if ((rc = cli_open_ctx(cli, &ctx)) != 0)
		return cli_fail(cli, rc, "configuration");
	/* Keys claimed by runs that died are counted where they belong: discarded. */
	if ((rc = cmk_store_pool_reap(ctx->store, &reaped)) == 0 && reaped > 0)
		shred(ctx);
	if (rc == 0)
		rc = cmk_pool_states(ctx->store, ctx->cfg, &pools, &n);
	if (rc == 0 && keys) {
		ka.by_pool = json_object();
		rc = cmk_store_pool_each(ctx->store, key_json, &ka);
	}
	if (rc != 0) {
		ret = cli_fail(cli, rc, "pool status");
		goto out;
	}
	if (cli->json) {
		json_t *arr = json_array(), *o;

		for (size_t i = 0; i < n; i++) {
			const struct cmk_pool_counts *k = &pools[i].counts;
			o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "pool", pools[i].name, "target",
				      (json_int_t)pools[i].target, "free", (json_int_t)k->free, "claimed",
				      (json_int_t)k->claimed, "generated", (json_int_t)k->generated, "used",
				      (json_int_t)k->used, "discarded", (json_int_t)k->discarded);
			if (keys) {
				json_t *list = json_object_get(ka.by_pool, pools[i].name);
				json_object_set(o, "keys", list != NULL ? list : json_array());
			}
			json_array_append_new(arr, o);
		}
		o = json_pack("{s:b, s:s, s:o}", "ok", 1, "mode", cmk_mode_name(ctx->cfg->openbao.mode), "pools", arr);
		cli_print_json(o);
		goto out;
	}
	if (mode_note(ctx) != NULL)
		cli_line(stdout, "%s", mode_note(ctx));
	printf("%-10s %6s %6s %8s %10s %8s %10s\n", "POOL", "TARGET", "FREE", "CLAIMED", "GENERATED", "USED",
	       "DISCARDED");
	for (size_t i = 0; i < n; i++) {
		const struct cmk_pool_counts *k = &pools[i].counts;
		cli_line(stdout, "%-10s %6u %6" PRIu64 " %8" PRIu64 " %10" PRIu64 " %8" PRIu64 " %10" PRIu64, pools[i].name,
			 pools[i].target, k->free, k->claimed, k->generated, k->used, k->discarded);
	}
out:
	json_decref(ka.by_pool);
	free(pools);
	cmk_ctx_free(ctx);
	return ret;
}

int cmd_pool(struct cli *cli, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(cli, "pool: expected a subcommand: fill or status");
	if (strcmp(argv[1], "fill") == 0)
		return pool_fill(cli, argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return pool_status(cli, argc - 1, argv + 1);
	return cli_usage_error(cli, "pool: unknown subcommand \"%s\"", argv[1]);
}
