/*
 * output.c - how the CLI reports: text for people on stdout/stderr, or one
 * JSON document on stdout with --json.  Exit codes are decided here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/lifecycle.h"
#include "cli.h"

int cli_exit_code(int rc)
{
	switch (rc) {
	case CMK_OK:
		return EXIT_OK;
	case CMK_ERR_INVALID:
	case CMK_ERR_CONFIG:
	case CMK_ERR_EXISTS:
	case CMK_ERR_PERM:
		return EXIT_USAGE;
	case CMK_ERR_UNREACHABLE:
	case CMK_ERR_SEALED:
	case CMK_ERR_TIMEOUT:
	case CMK_ERR_TLS:
		return EXIT_OPENBAO;
	default:
		return EXIT_FAILED;
	}
}

int cli_fail(const struct cli *cli, int rc, const char *what)
{
	const char *detail = cmk_errdetail();

	if (cli->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:i}", "error", cmk_strerror(rc), "detail",
				      detail[0] ? detail : cmk_strerror(rc), "operation", what, "code", rc);
		cli_print_json(o);
	}
	fprintf(stderr, "%s: %s: %s\n", cli->prog, what, detail[0] ? detail : cmk_strerror(rc));
	return cli_exit_code(rc);
}

int cli_usage_error(const struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cli->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", cli->prog);
	return EXIT_USAGE;
}

void cli_print_json(json_t *v)
{
	char *s;

	if (v == NULL)
		return;
	s = cmk_json_dump_pretty(v);
	if (s != NULL)
		fputs(s, stdout);
	free(s);
	json_decref(v);
}

/*
 * A thread of this process waits where a killed process left the store and
 * will never be released: the store was recovered under it.  Stop rather
 * than hang; the next run finds everything as the last commit left it.
 */
static void on_wedged(const char *path, void *arg)
{
	const struct cli *cli = arg;

	fprintf(stderr, "%s: the store %s had to be recovered while this command was waiting on it (a process "
		"using it was killed); stopped without finishing: run the command again\n", cli->prog, path);
	_exit(EXIT_FAILED);
}

int cli_open_ctx(const struct cli *cli, struct cmk_ctx **ctx)
{
	int rc = cmk_ctx_open(cli->config, cli_actor(), ctx);

	if (rc == 0)
		cmk_store_on_wedged((*ctx)->store, on_wedged, (void *)cli);
	return rc;
}

const char *cli_actor(void)
{
	static char actor[32];

	snprintf(actor, sizeof(actor), "cli:uid=%u", (unsigned)getuid());
	return actor;
}
