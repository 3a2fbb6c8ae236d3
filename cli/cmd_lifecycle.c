/*
 * cmd_lifecycle.c - cmkcert renew, revoke and keystore remove.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/openbao.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "cli.h"

struct target {
	const char *tenant, *type;
	bool due;
	int reason;
};

static int parse_target(struct cli *cli, const char *cmd, int argc, char **argv, struct target *t, bool allow_due,
			bool allow_reason)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "type", required_argument, NULL, 'k' },
		{ "due", no_argument, NULL, 'd' },
		{ "reason", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "wait", optional_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't': t->tenant = optarg; break;
		case 'k': t->type = optarg; break;
		case 'd':
			if (!allow_due)
				return cli_usage_error(cli, "%s: unknown option --due", cmd);
			t->due = true;
			break;
		case 'r':
			if (!allow_reason)
				return cli_usage_error(cli, "%s: unknown option --reason", cmd);
			if ((t->reason = cmk_revoke_reason_parse(optarg)) < 0)
				return cli_usage_error(cli, "--reason \"%s\": use compromise, superseded, cessation or "
						       "unspecified", optarg);
			break;
		case 'j': cli->json = true; break;
		case 'w':
			if ((rc = cli_parse_wait(cli, optarg)) != 0)
				return rc;
			break;
		default: return cli_usage_error(cli, "%s: unknown option", cmd);
		}
	}
	if (optind != argc)
		return cli_usage_error(cli, "%s: unexpected argument \"%s\"", cmd, argv[optind]);
	if (t->due && (t->tenant || t->type))
		return cli_usage_error(cli, "%s: give either --due or --tenant and --type", cmd);
	if (!t->due && (t->tenant == NULL || t->type == NULL))
		return cli_usage_error(cli, "%s: --tenant and --type are required%s", cmd, allow_due ? " (or --due)" : "");
	return 0;
}

static void step_text(const char *step, int rc, int64_t ms, const char *detail, void *arg)
{
	const struct cli *cli = arg;

	if (!cli->json)
		cli_line(stdout, "%-22s %-6s %6" PRId64 " ms  %s", step, rc ? "FAILED" : "ok", ms,
			 detail ? detail : "");
}

/*
 * The result, then (after a success) what the store's mounts show of it:
 * the "mount" field or line, and EXIT_WAIT when --wait ran out (follow.c).
 */
static int report(struct cli *cli, struct cmk_ctx *ctx, const char *what, int rc, const struct cmk_op_result *res)
{
	struct cli_follow follow = { 0 };
	char na[32] = "-";

	if (rc == 0)
		cli_follow_mounts(cli, ctx, &follow);
	if (res->not_after > 0)
		cmk_format_time(res->not_after, na, sizeof(na));
	if (cli->json) {
		json_t *o = cmk_json_op_result(what, rc, res);

		if (o != NULL && follow.json != NULL)
			json_object_set(o, "mount", follow.json);
		cli_print_json(o);
	} else if (res->id != 0) {
		cli_line(stdout, "certificate %" PRIu64 " %s: serial %s, not after %s", res->id,
			 cmk_status_name(res->status), res->serial, na);
	}
	if (rc != 0) {
		cli_error(cli, "%s: %s", what, cmk_errdetail());
		return rc == CMK_ERR_STATE ? EXIT_FAILED : cli_exit_code(rc);
	}
	return cli_follow_report(cli, &follow);
}

/*
 * Open the context and finish interrupted operations.  A command that will
 * talk to OpenBao first checks the files the configuration names for that,
 * so that a broken configuration is refused (exit 2) before the operation
 * records anything.
 */
static int open_and_recover(struct cli *cli, struct cmk_ctx **ctx, bool needs_openbao)
{
	unsigned n = 0;
	int rc = cli_open_ctx(cli, ctx);

	if (rc != 0)
		return cli_fail(cli, rc, "configuration");
	if ((rc = cmk_prepare(*ctx, needs_openbao, &n)) != 0) {
		rc = cli_fail(cli, rc, "configuration");
		cmk_ctx_free(*ctx);
		*ctx = NULL;
		return rc;
	}
	if (n > 0)
		cli_error(cli, "%u interrupted operation(s) recovered", n);
	return 0;
}

int cmd_renew(struct cli *cli, int argc, char **argv)
{
	struct target t = { 0 };
	struct cmk_op_result res = { 0 };
	struct cmk_ctx *ctx = NULL;
	int rc;

	if ((rc = parse_target(cli, "renew", argc, argv, &t, true, false)) != 0)
		return rc;
	/* --due may find nothing due: it needs OpenBao only for what it does. */
	if ((rc = open_and_recover(cli, &ctx, !t.due)) != 0)
		return rc;
	if (t.due) {
		struct cmk_pass_stats st;
		struct cli_follow follow = { 0 };
		rc = cmk_run_due(ctx, cmk_now(), 0, &st);
		/* What the pass committed, also when some renewals failed. */
		if (rc == 0)
			cli_follow_mounts(cli, ctx, &follow);
		if (cli->json) {
			json_t *o = json_pack("{s:b, s:i, s:i, s:i, s:i, s:i}", "ok", rc == 0 && st.failed == 0,
					      "renewed", st.renewed, "failed", st.failed, "busy", st.busy, "expired",
					      st.expired, "cleaned_up", st.cleaned);
			if (o != NULL && follow.json != NULL)
				json_object_set(o, "mount", follow.json);
			cli_print_json(o);
		} else {
			printf("renewed %u, failed %u, busy %u, expired %u, cleaned up %u\n", st.renewed, st.failed,
			       st.busy, st.expired, st.cleaned);
		}
		if (rc != 0) {
			cli_follow_report(cli, &follow);
			rc = cli_fail(cli, rc, "renew");
		} else {
			int wrc = cli_follow_report(cli, &follow);
			rc = st.failed ? EXIT_FAILED : wrc;
		}
	} else {
		rc = cmk_renew(ctx, t.tenant, t.type, &res, step_text, cli);
		rc = report(cli, ctx, "renew", rc, &res);
	}
	cmk_op_result_clear(&res);
	cmk_ctx_free(ctx);
	return rc;
}

int cmd_revoke(struct cli *cli, int argc, char **argv)
{
	struct target t = { .reason = CMK_REVOKE_UNSPECIFIED };
	struct cmk_op_result res = { 0 };
	struct cmk_ctx *ctx = NULL;
	int rc;

	if ((rc = parse_target(cli, "revoke", argc, argv, &t, false, true)) != 0)
		return rc;
	if ((rc = open_and_recover(cli, &ctx, true)) != 0)
		return rc;
	rc = cmk_revoke(ctx, t.tenant, t.type, (enum cmk_revoke_reason)t.reason, &res, step_text, cli);
	rc = report(cli, ctx, "revoke", rc, &res);
	cmk_op_result_clear(&res);
	cmk_ctx_free(ctx);
	return rc;
}

int cmd_keystore_remove(struct cli *cli, int argc, char **argv)
{
	struct target t = { 0 };
	struct cmk_op_result res = { 0 };
	struct cmk_ctx *ctx = NULL;
	int rc;

	if ((rc = parse_target(cli, "keystore remove", argc, argv, &t, false, false)) != 0)
		return rc;
	if ((rc = open_and_recover(cli, &ctx, true)) != 0)
		return rc;
	rc = cmk_keystore_remove(ctx, t.tenant, t.type, &res, step_text, cli);
	rc = report(cli, ctx, "keystore remove", rc, &res);
	cmk_op_result_clear(&res);
	cmk_ctx_free(ctx);
	return rc;
}

int cmd_verify(struct cli *cli, int argc, char **argv)
{
	struct cmk_verify_stats st;
	struct cmk_ctx *ctx = NULL;
	int rc;

	if (argc > 2 || (argc == 2 && strcmp(argv[1], "--json") != 0))
		return cli_usage_error(cli, "verify: unexpected argument \"%s\"", argv[1]);
	if (argc == 2)
		cli->json = true;
	cli->restartable = true;        /* read-mostly: the resets it makes, a new run finds made (a step line
					 * already written to a terminal shows twice) */
	if ((rc = cli_open_ctx(cli, &ctx)) != 0)
		return cli_fail(cli, rc, "configuration");
	rc = cmk_verify_store(ctx, &st, step_text, cli);
	if (cli->json)
		cli_print_json(json_pack("{s:b, s:i, s:i, s:i}", "ok", rc == 0, "active", st.active, "bad", st.bad,
					 "interrupted_reset", st.reset));
	else
		printf("%u active certificate(s) checked, %u bad, %u interrupted operation(s) reset\n", st.active,
		       st.bad, st.reset);
	if (rc != 0) {
		cli_error(cli, "verify: %s", cmk_errdetail());
		rc = cli_exit_code(rc);
	}
	cmk_ctx_free(ctx);
	return rc;
}
