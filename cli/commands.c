/*
 * commands.c - the cmkcert commands: check, keystore add, list, show,
 * audit verify.  Each parses its own options, calls the library and
 * reports in text or JSON.  Key bytes are never printed.
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmkcert/audit.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/names.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "cli.h"

#define REQUEST_MAX (1024 * 1024)

/* ---- shared ----------------------------------------------------------- */

/* Steps collected for --json output, or printed as they finish. */
struct steps {
	const struct cli *cli;
	json_t *list;
	char failed[64];      /* name of the first failed step */
};

static void on_step(const char *step, int rc, int64_t ms, const char *detail, void *arg)
{
	struct steps *s = arg;

	if (rc != 0 && s->failed[0] == '\0')
		snprintf(s->failed, sizeof(s->failed), "%s", step);
	if (s->cli->json) {
		cmk_json_step(s->list, step, rc, ms, detail);
		return;
	}
	cli_line(stdout, "%-22s %-6s %6" PRId64 " ms  %s", step, rc ? "FAILED" : "ok", ms, detail ? detail : "");
	fflush(stdout);
}

static int open_ctx(const struct cli *cli, struct cmk_ctx **ctx)
{
	int rc = cli_open_ctx(cli, ctx);

	if (rc != 0)
		return cli_fail(cli, rc, "configuration");
	return 0;
}

static void fmt_time(int64_t t, char *buf, size_t len)
{
	if (t <= 0)
		snprintf(buf, len, "-");
	else
		cmk_format_time(t, buf, len);
}

/* ---- check ------------------------------------------------------------ */

int cmd_check(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "login", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	struct steps s = { .cli = cli };
	struct cmk_ctx *ctx = NULL;
	int64_t t0 = cmk_monotonic_ms();
	bool login = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'j')
			cli->json = true;
		else if (c == 'l')
			login = true;
		else
			return cli_usage_error(cli, "check: unknown option");
	}
	if (optind != argc)
		return cli_usage_error(cli, "check: unexpected argument \"%s\"", argv[optind]);
	s.list = json_array();
	rc = cli_open_ctx(cli, &ctx);
	on_step("config", rc, cmk_monotonic_ms() - t0, rc ? cmk_errdetail() : "configuration, store, master key, "
		"audit trail", &s);
	if (rc == 0)
		rc = cmk_check(ctx, login, on_step, &s);
	if (cli->json) {
		cli_print_json(json_pack("{s:b, s:I, s:o}", "ok", rc == 0, "ms",
					 (json_int_t)(cmk_monotonic_ms() - t0), "steps", s.list));
	} else {
		json_decref(s.list);
		printf("%s in %" PRId64 " ms\n", rc == 0 ? "check passed" : "check FAILED", cmk_monotonic_ms() - t0);
	}
	if (rc != 0)
		cli_error(cli, "check: %s: %s", s.failed, cmk_errdetail());
	cmk_ctx_free(ctx);
	return cli_exit_code(rc);
}

/* ---- keystore add ------------------------------------------------------ */

static int read_request_file(const char *path, char **text, size_t *len)
{
	if (strcmp(path, "-") == 0) {
		size_t cap = 4096, n = 0, r;
		char *buf = malloc(cap);

		if (buf == NULL)
			return CMK_ERR_NOMEM;
		while ((r = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
			n += r;
			if (n + 1 == cap) {
				char *nb;
				if (cap >= REQUEST_MAX) {
					free(buf);
					return cmk_fail(CMK_ERR_INVALID, "keystore request on stdin: larger than %d bytes",
							REQUEST_MAX);
				}
				if ((nb = realloc(buf, cap * 2)) == NULL) {
					free(buf);
					return CMK_ERR_NOMEM;
				}
				buf = nb;
				cap *= 2;
			}
		}
		buf[n] = '\0';
		*text = buf;
		*len = n;
		return 0;
	}
	return cmk_read_file(path, REQUEST_MAX, text, len);
}

static int add_endpoint(struct cmk_keystore_request *req, const char *ep)
{
	char **n = realloc(req->endpoints, (req->n_endpoints + 2) * sizeof(char *));

	if (n == NULL)
		return CMK_ERR_NOMEM;
	req->endpoints = n;
	if ((n[req->n_endpoints] = strdup(ep)) == NULL)
		return CMK_ERR_NOMEM;
	n[++req->n_endpoints] = NULL;
	return 0;
}

/* `mount`: the "mount" field (cli_follow_mounts()), NULL when the operation failed. */
static void print_add_result(const struct cli *cli, const struct cmk_op_result *res, struct steps *s, int rc,
			     json_t *mount)
{
	char na[32], ra[32];

	if (cli->json) {
		json_t *o = cmk_json_add_result(res, rc, s->list);

		if (o != NULL && mount != NULL)
			json_object_set(o, "mount", mount);
		cli_print_json(o);
		s->list = NULL;
		return;
	}
	for (size_t i = 0; i < res->warnings.count; i++)
		cli_line(stdout, "warning: %s", res->warnings.items[i]);
	if (res->id == 0)
		return;
	fmt_time(res->not_after, na, sizeof(na));
	fmt_time(res->renew_at, ra, sizeof(ra));
	cli_line(stdout, "certificate %" PRIu64 " %s: serial %s, expires %s, renew at %s", res->id,
		 cmk_status_name(res->status), res->serial, na, ra);
}

static int keystore_add(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "type", required_argument, NULL, 'k' },
		{ "endpoint", required_argument, NULL, 'e' },
		{ "server-ca", required_argument, NULL, 's' },
		{ "verify", required_argument, NULL, 'V' },
		{ "json", required_argument, NULL, 'j' },
		{ "request", required_argument, NULL, 'j' },
		{ "wait", optional_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmk_keystore_request req = { .verify = -1 };
	struct cli_follow follow = { 0 };
	struct cmk_op_result res = { 0 };
	struct steps s = { .cli = cli };
	struct cmk_ctx *ctx = NULL;
	const char *tenant = NULL, *type = NULL, *server_ca = NULL, *json_path = NULL;
	char *text = NULL;
	size_t len = 0;
	int c, rc = 0, ret;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't': tenant = optarg; break;
		case 'k': type = optarg; break;
		case 'e':
			if (add_endpoint(&req, optarg) != 0) {
				ret = cli_fail(cli, CMK_ERR_NOMEM, "keystore add");
				goto out;
			}
			break;
		case 's': server_ca = optarg; break;
		case 'V':
			if ((req.verify = cmk_verify_parse(optarg)) < 0) {
				ret = cli_usage_error(cli, "--verify \"%s\": use tls, kmip or none", optarg);
				goto out;
			}
			break;
		case 'j': json_path = optarg; break;
		case 'w':
			if ((ret = cli_parse_wait(cli, optarg)) != 0)
				goto out;
			break;
		default:
			ret = cli_usage_error(cli, "keystore add: unknown option");
			goto out;
		}
	}
	if (optind != argc) {
		ret = cli_usage_error(cli, "keystore add: unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (json_path != NULL) {
		int verify = req.verify;
		if (tenant || type || req.n_endpoints) {
			ret = cli_usage_error(cli, "keystore add: give either --json FILE or --tenant/--type/--endpoint");
			goto out;
		}
		cli->read_stdin = strcmp(json_path, "-") == 0;
		/* A request file that is missing or unreadable is bad input, like a request that does not parse. */
		if ((rc = read_request_file(json_path, &text, &len)) != 0 && rc != CMK_ERR_NOMEM)
			rc = cmk_fail(CMK_ERR_INVALID, "--json: %s", cmk_errdetail());
		if (rc != 0 || (rc = cmk_keystore_request_from_json(text, len, &req)) != 0) {
			ret = cli_fail(cli, rc, "keystore add");
			goto out;
		}
		/* --verify given on the command line wins over the request's. */
		if (verify >= 0)
			req.verify = verify;
	} else {
		if (tenant == NULL || type == NULL) {
			ret = cli_usage_error(cli, "keystore add: --tenant and --type are required (or --json FILE)");
			goto out;
		}
		if (strlen(tenant) > CMK_TENANT_MAX) {
			rc = cmk_fail(CMK_ERR_INVALID, "tenant_id: %zu characters, at most %d", strlen(tenant),
				      CMK_TENANT_MAX);
			ret = cli_fail(cli, rc, "keystore add");
			goto out;
		}
		if (strlen(type) > CMK_TYPE_MAX) {
			rc = cmk_fail(CMK_ERR_INVALID, "type: %zu characters, at most %d", strlen(type), CMK_TYPE_MAX);
			ret = cli_fail(cli, rc, "keystore add");
			goto out;
		}
		snprintf(req.tenant, sizeof(req.tenant), "%s", tenant);
		snprintf(req.type, sizeof(req.type), "%s", type);
	}
	if (server_ca != NULL) {
		/* --server-ca wins over the request's server_ca. */
		free(req.server_ca_pem);
		req.server_ca_pem = NULL;
		if ((rc = cmk_read_file(server_ca, 256 * 1024, &req.server_ca_pem, NULL)) != 0) {
			cmk_fail(rc, "--server-ca: %s", cmk_errdetail());
			ret = cli_fail(cli, rc == CMK_ERR_NOTFOUND ? CMK_ERR_INVALID : rc, "keystore add");
			goto out;
		}
	}
	if ((ret = open_ctx(cli, &ctx)) != 0)
		goto out;
	{
		unsigned n = 0;
		/* The request is validated with the configuration's files inside cmk_keystore_add(). */
		if (cmk_prepare(ctx, false, &n) == 0 && n > 0)
			cli_error(cli, "%u interrupted operation(s) recovered", n);
	}
	s.list = json_array();
	rc = cmk_keystore_add(ctx, &req, &res, on_step, &s);
	if (rc == 0)
		cli_follow_mounts(cli, ctx, &follow);
	print_add_result(cli, &res, &s, rc, follow.json);
	if (rc != 0) {
		cli_error(cli, "keystore add: %s%s%s", s.failed, s.failed[0] ? ": " : "", cmk_errdetail());
		/* The keystore refusing the pair is a failed operation, not an OpenBao outage. */
		ret = strcmp(s.failed, "test") == 0 ? EXIT_FAILED : cli_exit_code(rc);
	} else {
		ret = EXIT_OK;
	}
out:
	/* The mount line after the certificate line; EXIT_WAIT when --wait ran out. */
	if (ret == EXIT_OK)
		ret = cli_follow_report(cli, &follow);
	else
		cli_follow_report(cli, &follow);
	json_decref(s.list);
	cmk_op_result_clear(&res);
	cmk_keystore_request_clear(&req);
	free(text);
	cmk_ctx_free(ctx);
	return ret;
}

int cmd_keystore(struct cli *cli, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(cli, "keystore: expected a subcommand: add or remove");
	if (strcmp(argv[1], "add") == 0)
		return keystore_add(cli, argc - 1, argv + 1);
	if (strcmp(argv[1], "remove") == 0)
		return cmd_keystore_remove(cli, argc - 1, argv + 1);
	return cli_usage_error(cli, "keystore: unknown subcommand \"%s\"", argv[1]);
}

/* ---- list / show ------------------------------------------------------ */

/*
 * list prints each record as the walk delivers it, so the first line comes
 * at once and memory stays flat however many there are; --json prints the
 * array element by element, exactly as it would print it whole.
 */
struct list_arg {
	const struct cli *cli;
	size_t n;
};

static int list_one(const struct cmk_cert_record *r, void *arg)
{
	struct list_arg *a = arg;
	char na[32];

	if (a->cli->json) {
		json_t *o = cmk_json_record(r, false);
		char *text = cmk_json_pretty_array_item(o, a->n == 0);

		json_decref(o);
		if (text == NULL)
			return CMK_ERR_NOMEM;
		fputs(text, stdout);
		free(text);
	} else {
		fmt_time(r->not_after, na, sizeof(na));
		cli_line(stdout, "%-6" PRIu64 " %-24s %-14s %-10s %-22s %s", r->id, r->tenant, r->type,
			 cmk_status_name(r->status), na, r->serial);
	}
	/* The first one at once, whoever reads the pipe; the rest in full buffers. */
	if (a->n++ == 0)
		fflush(stdout);
	return 0;
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "type", required_argument, NULL, 'k' },
		{ "status", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmk_cert_filter f = { .status = -1 };
	struct list_arg a = { .cli = cli };
	struct cmk_ctx *ctx = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't': f.tenant = optarg; break;
		case 'k': f.type = optarg; break;
		case 's':
			if ((f.status = cmk_status_parse(optarg)) < 0)
				return cli_usage_error(cli, "--status \"%s\": use pending, active, rotating, failed, "
						       "revoked, cleaned_up or expired", optarg);
			break;
		case 'j': cli->json = true; break;
		default: return cli_usage_error(cli, "list: unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(cli, "list: unexpected argument \"%s\"", argv[optind]);
	/* Bad names are refused before the store is opened; cmk_cert_list() checks them again. */
	if (f.tenant != NULL && (rc = cmk_check_tenant("--tenant", f.tenant)) != 0)
		return cli_fail(cli, rc, "list");
	if (f.type != NULL && (rc = cmk_check_type("--type", f.type)) != 0)
		return cli_fail(cli, rc, "list");
	if ((rc = open_ctx(cli, &ctx)) != 0)
		return rc;
	if (!cli->json) {
		printf("%-6s %-24s %-14s %-10s %-22s %s\n", "ID", "TENANT", "TYPE", "STATUS", "NOT AFTER", "SERIAL");
		fflush(stdout);
	}
	rc = cmk_cert_list(ctx, &f, list_one, &a);
	if (cli->json && (rc == 0 || a.n > 0))
		fputs(cmk_json_pretty_array_end(a.n), stdout);
	if (rc != 0 && cli->json && a.n > 0) {
		/* Part of the array is out: it is closed, so stdout still holds one document; the error goes to stderr. */
		cli_error(cli, "list: %s (the list is incomplete)", cmk_errdetail());
		rc = cli_exit_code(rc);
	} else if (rc != 0) {
		rc = cli_fail(cli, rc, "list");
	}
	cmk_ctx_free(ctx);
	return rc;
}

int cmd_show(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ "type", required_argument, NULL, 'k' },
		{ "pem", no_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tenant = NULL, *type = NULL;
	struct cmk_cert_record r = { 0 };
	struct cmk_ctx *ctx = NULL;
	bool pem = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't': tenant = optarg; break;
		case 'k': type = optarg; break;
		case 'p': pem = true; break;
		case 'j': cli->json = true; break;
		default: return cli_usage_error(cli, "show: unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(cli, "show: unexpected argument \"%s\"", argv[optind]);
	if (tenant == NULL || type == NULL)
		return cli_usage_error(cli, "show: --tenant and --type are required");
	if ((rc = cmk_check_tenant("--tenant", tenant)) != 0 || (rc = cmk_check_type("--type", type)) != 0)
		return cli_fail(cli, rc, "show");
	if ((rc = open_ctx(cli, &ctx)) != 0)
		return rc;
	rc = cmk_cert_current(ctx, tenant, type, &r);
	if (rc != 0) {
		rc = cli_fail(cli, rc, "show");
		goto out;
	}
	if (cli->json) {
		cli_print_json(cmk_json_record(&r, pem));
	} else {
		char a[32], b[32], ra[32], act[32];
		fmt_time(r.not_before, a, sizeof(a));
		fmt_time(r.not_after, b, sizeof(b));
		fmt_time(r.renew_at, ra, sizeof(ra));
		fmt_time(r.activated_at, act, sizeof(act));
		cli_line(stdout, "id:           %" PRIu64, r.id);
		cli_line(stdout, "tenant:       %s", r.tenant);
		cli_line(stdout, "type:         %s", r.type);
		cli_line(stdout, "status:       %s", cmk_status_name(r.status));
		cli_line(stdout, "serial:       %s", r.serial);
		cli_line(stdout, "fingerprint:  %s", r.fingerprint);
		cli_line(stdout, "subject:      %s", r.subject ? r.subject : "");
		cli_line(stdout, "not before:   %s", a);
		cli_line(stdout, "not after:    %s", b);
		cli_line(stdout, "activated:    %s", act);
		cli_line(stdout, "renew at:     %s", ra);
		cli_line(stdout, "key:          %s", r.sealed_key ? "sealed" : "destroyed");
		if (r.last_error)
			cli_line(stdout, "last error:   %s", r.last_error);
		cli_line(stdout, "files:        /certs/%s-%s.crt /private/%s-%s.key /ca/%s-ca-chain.pem", r.tenant,
			 r.type, r.tenant, r.type, r.type);
		if (pem)
			printf("%s\n%s\n", r.cert_pem ? r.cert_pem : "", r.chain_pem ? r.chain_pem : "");
	}
	rc = EXIT_OK;
out:
	cmk_cert_record_clear(&r);
	cmk_ctx_free(ctx);
	return rc;
}

/* ---- audit verify ----------------------------------------------------- */

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void print_audit_report(const char *path, const struct cmk_audit_report *r, bool anchored)
{
	/* The path is the only text from outside in this report; the rest is printed in pieces. */
	char *safe = cli_escaped(path);

	printf("%s: %" PRIu64 " lines, hash chain intact", safe != NULL ? safe : "audit trail", r->lines);
	free(safe);
	if (r->first_seq > 1)
		printf(" (numbered from %" PRIu64 ": it continues a rotated trail)", r->first_seq);
	if (r->keyed_from == 1)
		printf(", every line's MAC checked");
	else if (r->keyed_from > 1)
		printf(", MACs checked from line %" PRIu64 " (lines before it are in the older unkeyed format, "
		       "vouched for by that line)", r->keyed_from);
	else
		printf(", no keyed line yet");
	if (r->anchored > 0)
		printf("; ends where the store's anchor says (line %" PRIu64 ")", r->anchored);
	else if (anchored)
		printf("; the store has no anchor yet");
	else
		printf("; not this store's trail: no anchor checked");
	if (r->unanchored > 0)
		printf(", %" PRIu64 " line(s) after it from operations that did not complete", r->unanchored);
	if (r->repairs > 0)
		printf("; %" PRIu64 " interrupted write(s) removed and recorded", r->repairs);
	printf("\n");
}

/* Start a new trail file continuing the chain; the old one keeps its lines under a dated name. */
static int audit_rotate(struct cli *cli)
{
	struct cmk_ctx *ctx = NULL;
	char moved[PATH_MAX + 32];
	int rc;

	if ((rc = cli_open_ctx(cli, &ctx)) != 0)
		return cli_fail(cli, rc, "configuration");
	if ((rc = cmk_audit_rotate(ctx->audit, moved, sizeof(moved))) != 0) {
		rc = cli_fail(cli, rc, "audit rotate");
	} else {
		if (cli->json)
			cli_print_json(json_pack("{s:b, s:s, s:s}", "ok", 1, "file", ctx->cfg->audit.path, "moved_to",
						 moved));
		else
			cli_line(stdout, "%s: lines so far moved to %s; the trail goes on in %s", ctx->cfg->audit.path,
				 moved, ctx->cfg->audit.path);
		rc = EXIT_OK;
	}
	cmk_ctx_free(ctx);
	return rc;
}

int cmd_audit(struct cli *cli, int argc, char **argv)
{
	struct cmk_audit_report rep = { 0 };
	struct cmk_audit_anchor anchor = { 0 };
	struct cmk_audit_check chk = { NULL, NULL };
	struct cmk_ctx *ctx = NULL;
	uint8_t key[32];
	const char *path;
	bool own;
	int rc;

	if (argc == 2 && strcmp(argv[1], "rotate") == 0)
		return audit_rotate(cli);
	if (argc < 2 || strcmp(argv[1], "verify") != 0)
		return cli_usage_error(cli, "audit: expected \"audit verify [FILE]\" or \"audit rotate\"");
	if (argc > 3)
		return cli_usage_error(cli, "audit verify: too many arguments");
	/* The MAC key comes from the master key, the anchor from the store: both need the configuration. */
	if ((rc = cli_open_ctx(cli, &ctx)) != 0)
		return cli_fail(cli, rc, "configuration");
	path = argc == 3 ? argv[2] : ctx->cfg->audit.path;
	own = argc == 2 || same_file(path, ctx->cfg->audit.path);
	if ((rc = cmk_sealer_audit_key(ctx->sealer, key)) != 0) {
		rc = cli_fail(cli, rc, "audit verify");
		goto out;
	}
	chk.key = key;
	if (own) {
		rc = cmk_store_audit_anchor_get(ctx->store, NULL, &anchor);
		if (rc != 0 && rc != CMK_ERR_NOTFOUND) {
			rc = cli_fail(cli, rc, "audit verify");
			goto out;
		}
		chk.anchor = &anchor;
	}
	rc = cmk_audit_verify(path, &chk, &rep);
	if (cli->json) {
		json_t *o = json_pack("{s:b, s:s, s:I, s:I, s:I, s:I, s:I}", "ok", rc == 0, "file", path, "lines",
				      (json_int_t)rep.lines, "keyed_from", (json_int_t)rep.keyed_from, "anchored_line",
				      (json_int_t)rep.anchored, "unanchored_lines", (json_int_t)rep.unanchored,
				      "repairs", (json_int_t)rep.repairs);
		if (rc != 0) {
			json_object_set_new(o, "first_bad_line", json_integer((json_int_t)rep.bad_line));
			json_object_set_new(o, "detail", json_string(cmk_errdetail()));
		}
		cli_print_json(o);
	} else if (rc == 0) {
		print_audit_report(path, &rep, own);
	}
	if (rc != 0) {
		cli_error(cli, "audit verify: %s: %s", path, cmk_errdetail());
		/* A FILE given on the command line that does not exist is bad input; a damaged trail is a failure. */
		if (rc == CMK_ERR_AUDIT)
			rc = EXIT_FAILED;
		else if (rc == CMK_ERR_NOTFOUND && argc == 3)
			rc = EXIT_USAGE;
		else
			rc = cli_exit_code(rc);
	}
out:
	cmk_wipe(key, sizeof(key));
	cmk_ctx_free(ctx);
	return rc;
}
