/*
 * die_inside_store STORE_DIR - a test helper: open the store and get killed
 * (SIGKILL) inside a Berkeley DB call, holding a mutex of the shared lock
 * region, the way a process killed at the worst moment would.  The lock
 * statistics print through the message callback while holding that mutex;
 * the log callback kills the process at the first line.  Only recovery
 * repairs what it leaves; the processes still using the store must notice
 * and carry on.  Exits 2 on a usage error, 1 when it could not get inside.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/store.h"
#include "store_bdb_int.h"

static void die(enum cmk_log_level level, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	if (strstr(msg, "berkeley db") != NULL)
		kill(getpid(), SIGKILL);
}

int main(int argc, char **argv)
{
	struct cmk_store *st;

	if (argc != 2) {
		fprintf(stderr, "usage: die_inside_store STORE_DIR\n");
		return 2;
	}
	if (cmk_store_open(argv[1], &st) != 0) {
		fprintf(stderr, "die_inside_store: %s\n", cmk_errdetail());
		return 1;
	}
	cmk_set_log(die, NULL, CMK_LOG_DEBUG);
	st->gen->env->lock_stat_print(st->gen->env, DB_STAT_ALL);
	fprintf(stderr, "die_inside_store: still alive\n");
	return 1;
}
