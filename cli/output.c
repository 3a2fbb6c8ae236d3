/*
 * output.c - how the CLI reports: text for people on stdout/stderr, or one
 * JSON document on stdout with --json.  Exit codes are decided here.
 *
 * Text lines quote names, paths, request fields and server answers that may
 * hold terminal escapes or newlines; every line is escaped (cmk_escape) as
 * a whole on its way out, so no caller has to remember which of its
 * arguments came from outside.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/lifecycle.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "cli.h"

char *cli_escaped(const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;
	/* Each byte escapes to at most 4: nothing is ever cut. */
	char *out = malloc(4 * len + 4);

	if (out != NULL)
		cmk_escape(out, 4 * len + 4, s != NULL ? s : "", len, 0);
	return out;
}

/* Format, escape, write `prefix`, the text and a newline to `f`. */
static void vline(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
	char *text = NULL, *safe = NULL;

	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	safe = cli_escaped(text);
	fprintf(f, "%s%s\n", prefix, safe != NULL ? safe : "(out of memory)");
	free(safe);
	free(text);
}

void cli_line(FILE *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline(f, "", fmt, ap);
	va_end(ap);
}

/* "cmkcert: ", after "<N>" when stderr is the journal. */
static void err_prefix(const struct cli *cli, enum cmk_log_level level, char *buf, size_t size)
{
	if (cli->journal)
		snprintf(buf, size, "<%d>%s: ", cmk_log_priority(level), cli->prog);
	else
		snprintf(buf, size, "%s: ", cli->prog);
}

void cli_error(const struct cli *cli, const char *fmt, ...)
{
	char prefix[64];
	va_list ap;

	err_prefix(cli, CMK_LOG_ERROR, prefix, sizeof(prefix));
	va_start(ap, fmt);
	vline(stderr, prefix, fmt, ap);
	va_end(ap);
}

static void log_line(const struct cli *cli, enum cmk_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void log_line(const struct cli *cli, enum cmk_log_level level, const char *fmt, ...)
{
	char prefix[64];
	va_list ap;

	err_prefix(cli, level, prefix, sizeof(prefix));
	va_start(ap, fmt);
	vline(stderr, prefix, fmt, ap);
	va_end(ap);
}

void cli_log(const struct cli *cli, enum cmk_log_level level, const char *msg)
{
	log_line(cli, level, "%s: %s", cmk_log_level_name(level), msg);
}

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

	if (cli->json)
		cli_print_json(cmk_json_error(rc, what));
	cli_error(cli, "%s: %s", what, detail[0] ? detail : cmk_strerror(rc));
	return cli_exit_code(rc);
}

int cli_usage_error(const struct cli *cli, const char *fmt, ...)
{
	char prefix[64];
	va_list ap;

	err_prefix(cli, CMK_LOG_ERROR, prefix, sizeof(prefix));
	va_start(ap, fmt);
	vline(stderr, prefix, fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help'.\n", cli->prog);
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

#define MAX_RESTARTS 3

/*
 * A thread of this process waits where a killed process left the store and
 * will never be released.  If that happened while the store was being
 * opened, nothing was done yet: start the run again (the store is recovered
 * meanwhile); so does a command that may start again at any point
 * (cli->restartable).  Otherwise stop rather than hang; the next run finds
 * everything as the last commit left it.
 */
void cli_on_wedged(const char *path, bool whole_store, void *arg)
{
	const struct cli *cli = arg;
	const char *n = getenv("CMKCERT_RESTARTS");
	int restarts = n != NULL ? atoi(n) : 0;
	char count[16];

	if ((whole_store || cli->restartable) && !cli->read_stdin && cli->argv != NULL && restarts < MAX_RESTARTS) {
		snprintf(count, sizeof(count), "%d", restarts + 1);
		if (setenv("CMKCERT_RESTARTS", count, 1) == 0) {
			execv("/proc/self/exe", cli->argv);
			cli_error(cli, "starting again: %s", strerror(errno));
		}
	}
	cli_error(cli, "the store %s had to be recovered while this command was waiting on it (a process "
		  "using it was killed); stopped without finishing: run the command again", path);
	_exit(EXIT_FAILED);
}

int cli_open_ctx(const struct cli *cli, struct cmk_ctx **ctx)
{
	return cmk_ctx_open(cli->config, cli_actor(), ctx);
}

const char *cli_actor(void)
{
	static char actor[32];

	snprintf(actor, sizeof(actor), "cli:uid=%u", (unsigned)getuid());
	return actor;
}
