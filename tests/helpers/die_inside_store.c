/*
 * die_inside_store [--hold-changes] STORE_DIR - a test helper: open the
 * store and get killed (SIGKILL) inside a Berkeley DB call, holding a mutex
 * of the shared lock region, the way a process killed at the worst moment
 * would.  With --hold-changes it first writes a record in a transaction it
 * never commits and waits a second, so that readers of the change log wait
 * on its lock when it dies.  The lock
 * statistics print through the message callback while holding that mutex;
 * the log callback kills the process at the first line.  Only recovery
 * repairs what it leaves; the processes still using the store must notice
 * and carry on.  Exits 2 on a usage error, 1 when it could not get inside.
 */
#include <signal.h>
#include <stdbool.h>
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

/* Write a record (and so the change log's last page) without committing. */
static int hold_changes(struct cmk_store *st)
{
	struct cmk_cert_record r = { .status = CMK_ST_FAILED };
	struct cmk_txn *txn;
	int rc;

	snprintf(r.tenant, sizeof(r.tenant), "zz-dying");
	snprintf(r.type, sizeof(r.type), "helper");
	if ((rc = cmk_store_begin(st, &txn)) != 0 || (rc = cmk_store_cert_next_id(txn, &r.id)) != 0 ||
	    (rc = cmk_store_cert_put(txn, &r)) != 0)
		return rc;
	sleep(1);
	return 0;
}

int main(int argc, char **argv)
{
	struct cmk_store *st;
	bool hold = argc == 3 && strcmp(argv[1], "--hold-changes") == 0;

	if (argc != 2 && !hold) {
		fprintf(stderr, "usage: die_inside_store [--hold-changes] STORE_DIR\n");
		return 2;
	}
	if (cmk_store_open(argv[argc - 1], &st) != 0 || (hold && hold_changes(st) != 0)) {
		fprintf(stderr, "die_inside_store: %s\n", cmk_errdetail());
		return 1;
	}
	cmk_set_log(die, NULL, CMK_LOG_DEBUG);
	st->gen->env->lock_stat_print(st->gen->env, DB_STAT_ALL);
	fprintf(stderr, "die_inside_store: still alive\n");
	return 1;
}
