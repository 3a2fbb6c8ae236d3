/*
 * follow.c - the CLI's side of "what the mounts show" (core/follow.c):
 * --wait[=SECONDS], the mount line after a change and exit status 4.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/follow.h"
#include "cli.h"

int cli_parse_wait(struct cli *cli, const char *arg)
{
	cli->wait = true;
	if (cmk_follow_parse_wait(arg, &cli->wait_ms) != 0)
		return cli_usage_error(cli, "--wait=%s: give the seconds to wait, 0 to %d (--wait alone: %d)", arg,
				       CMK_FOLLOW_WAIT_MAX_S, CMK_FOLLOW_WAIT_DEFAULT_S);
	return 0;
}

void cli_follow_mounts(const struct cli *cli, struct cmk_ctx *ctx, struct cli_follow *f)
{
	struct cmk_follow cf = { 0 };

	cmk_follow_mounts(ctx, cli->wait, cli->wait_ms, &cf);
	f->line = cf.line;
	f->json = cf.json;
	f->error = cf.error;
	f->exit = cf.failed ? EXIT_WAIT : EXIT_OK;
}

int cli_follow_report(const struct cli *cli, struct cli_follow *f)
{
	int ret = f->exit;

	if (!cli->json && f->line != NULL)
		printf("%s\n", f->line);
	if (f->error != NULL)
		fprintf(stderr, "%s: --wait: %s\n", cli->prog, f->error);
	json_decref(f->json);
	free(f->line);
	free(f->error);
	memset(f, 0, sizeof(*f));
	return ret;
}
