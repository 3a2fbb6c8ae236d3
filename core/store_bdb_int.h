/*
 * store_bdb_int.h - what the Berkeley DB files of the store share: the
 * handle, its environment generations, transactions and the translation of
 * BDB results.  Only the store's own files include it: store_env.c
 * (environment, liveness, recovery), store_bdb.c (records, indexes, change
 * log), store_keys.c (key slots, shredding), store_pool.c (the key pool)
 * and store_token.c (the shared token, verified chains); nothing else in
 * the project sees db.h.
 *
 * Generations.  A struct cmk_store lives as long as the caller keeps it; the
 * Berkeley DB environment under it may have to be replaced: when a process
 * died inside Berkeley DB (failure checking cannot release what it held) or
 * another process recovered the environment, every handle on it is dead.
 * Each environment opened for the store is a generation.  Every call enters
 * the current generation (reopening it first when it has failed), and a
 * transaction stays in the generation it began in: once that one fails, the
 * transaction's calls answer CMK_ERR_BUSY and the caller redoes the whole
 * transaction, as after a deadlock.  A failed generation is retired: its
 * environment is closed the way BDB closes a panicked one (file handles go,
 * memory stays), and its memory is released once no
 * thread is inside it.  A thread that never comes back (it waits on a mutex
 * that a dead process held) is reported as wedged and its generation is
 * never freed.
 */
#ifndef CMKCERT_STORE_BDB_INT_H
#define CMKCERT_STORE_BDB_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <db.h>

#include "cmkcert/store.h"
#include "store_int.h"

/* Sizes of sealed key slots (store_keys.c). */
#define CMK_KEY_CLASSES 3

/* A mapping of one of the environment's region files, unmapped when its generation is freed. */
struct region_map {
	uintptr_t start, end;
};

struct store_gen {
	struct cmk_store *st;
	uint64_t number;              /* 1 for the first environment of this handle, then +1 per reopen */
	DB_ENV *env;
	DB *meta, *certs, *by_tts, *by_renew, *by_serial, *keystores, *changes, *audit;
	DB *keys[CMK_KEY_CLASSES];    /* sealed keys in slots of their own, one database per size (store_keys.c) */
	DB *keyfree;                  /* free slots of every size */
	DB *pool;                     /* the key pool's entries and counters (store_pool.c) */
	DB *session;                  /* the OpenBao token shared by every process (store_token.c) */
	DB *by_status;                /* secondary: status (and "revocation pending") -> id */
	DB *chains;                   /* CA chains, each kept once: SHA-256 of the text -> text */
	uint32_t format;              /* the store's format when opened; below CMK_STORE_FORMAT it is shared
					 with older code: no by_status, records written as that code reads
					 them (store_upgrade() brings it up to date) */
	atomic_bool broken;           /* needs recovery: no new call enters it */
	atomic_int inside;            /* threads inside a call */
	atomic_int txns;              /* open transactions */
	/* Under st->mu: */
	bool retired;
	bool env_closed;              /* retired, and its environment handle closed (no thread was inside) */
	bool wedge_reported;
	int64_t retired_ms;
	struct region_map *maps;
	size_t n_maps;
	struct store_gen *next;       /* in st->retired */
};

struct cmk_store {
	struct cmk_store *next;       /* in the process's list of open stores */
	dev_t dev;
	ino_t ino;
	pid_t pid;
	char *path;
	char *real_path;              /* resolved, as /proc/self/maps names the region files */
	uint8_t id[CMK_STORE_ID_LEN];
	int lock_fd;                  /* cmkcert.lock: read-locked while an environment is open (store_env.c) */
	int procs_fd;                 /* cmkcert.procs: our liveness lock at offset pid */
	uint64_t epoch;               /* recovery epoch of the environment we have (or last had) open */
	atomic_int_fast64_t opening_since;  /* monotonic ms an environment open began, 0 = none in progress */
	atomic_uint_fast64_t opening_epoch; /* the epoch of the environment being opened */

	pthread_mutex_t mu;           /* guards gen and retired */
	struct store_gen *gen;        /* current; NULL when a reopen failed (the next call tries again) */
	struct store_gen *retired;    /* replaced generations that threads are still inside */
	atomic_uint_fast64_t generations;
	atomic_uint stuck;            /* threads found waiting in retired generations */
	atomic_uint log_file;         /* the log file the last write commit saw (old ones removed when it moves on) */
	atomic_uint_fast64_t records_read;  /* certificate records read (cmk_store_records_read()) */

	bool reopen_failed;           /* under mu: the last environment failed; the next open recovers it */
	int64_t open_wedge_reported;  /* monitor thread only */

	pthread_t monitor;
	pthread_mutex_t monitor_mu;   /* guards monitor_stop; never held while the store is used */
	pthread_cond_t monitor_cv;    /* CLOCK_MONOTONIC */
	bool monitor_stop;
	bool monitor_running;
	cmk_store_wedged_fn wedged;
	void *wedged_arg;
};

struct cmk_txn {
	struct store_gen *g;
	DB_TXN *t;
	bool wrote;
};

/*
 * Enter the current generation (opening a new one when it has failed); on
 * success the caller must gen_leave(*g).  Fails with the error of the reopen.
 */
int gen_enter(struct cmk_store *st, struct store_gen **g);
void gen_leave(struct store_gen *g);

/* Enter the generation of txn; CMK_ERR_BUSY when it failed since (redo the transaction). */
int gen_enter_txn(struct cmk_txn *txn);

/* A transaction handle counts as a user of its generation until it ends. */
void gen_txn_begun(struct store_gen *g);
void gen_txn_ended(struct store_gen *g);

/* True when calls must not reach BDB through g any more. */
bool gen_is_broken(const struct store_gen *g);

/*
 * The one translation of a BDB result into CMK_ERR_* with detail
 * "<what>: <BDB text>".  DB_RUNRECOVERY marks the generation broken and is
 * CMK_ERR_BUSY: nothing was committed, redo the transaction (a new
 * environment is opened for it).
 */
int db_fail(struct store_gen *g, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The short BDB error text of this thread's last failure (consumed by db_fail). */
extern _Thread_local char cmk_bdb_msg[256];

/*
 * Databases of a generation: opened by store_env.c, defined by store_bdb.c.
 * Opening also reads (or, in a new store, creates) the store id.
 */
int store_open_dbs(struct store_gen *g, uint8_t id[CMK_STORE_ID_LEN]);
void store_close_dbs(struct store_gen *g, bool sync);

/*
 * Bring a store of an older format to the current one: the caller has the
 * store alone (no other process has it open).  The databases are open again
 * afterwards, in the current format.
 */
int store_upgrade(struct store_gen *g, uint8_t id[CMK_STORE_ID_LEN]);

/* Pause before a retry: attempt * 2 ms. */
void store_backoff(int attempt);

/* A read step: runs inside a transaction; `rmw` is DB_RMW when the caller's transaction will update. */
typedef int (*read_fn)(struct store_gen *g, DB_TXN *t, u_int32_t rmw, void *arg);

/*
 * Run `fn` in the caller's transaction, or else in a short read-committed
 * transaction of its own, retried when chosen as a deadlock victim (store_bdb.c).
 */
int in_read_txn(struct cmk_store *st, struct cmk_txn *txn, read_fn fn, void *arg);

/* True while process `pid` has the store open (its liveness lock is held); this process always is. */
bool store_process_alive(const struct cmk_store *st, pid_t pid);

/*
 * The key pool's and the token's databases (store_pool.c, store_token.c):
 * opened in the transaction that opens the others, closed with them.
 */
int store_pool_open(struct store_gen *g, DB_TXN *t);
void store_pool_close(struct store_gen *g, u_int32_t flags);
int store_token_open(struct store_gen *g, DB_TXN *t);
void store_token_close(struct store_gen *g, u_int32_t flags);

/* Sizes of the environment that store_keys.c depends on. */
#define CMK_LOG_FILE_BYTES (2u << 20)
#define CMK_LOG_BUFFER_BYTES (64u << 10)
/* The largest sealed key slot: a 4-byte length and the blob (an RSA-4096 PEM sealed is about 3.3 KB). */
#define CMK_KEY_SLOT_LEN 4000

/*
 * Key slots (store_keys.c).  Open and close the slot databases (keys*.db) and keyfree.db; read a
 * slot's sealed key (*blob malloc'd); write one (into *slot, or a free or
 * new slot when *slot is 0, set on return); destroy one (overwritten with
 * zeros in place, freed, and counted for cmk_store_shred()).
 */
int store_keys_open(struct store_gen *g, DB_TXN *t);
void store_keys_close(struct store_gen *g, u_int32_t flags);
int store_key_read(struct store_gen *g, DB_TXN *t, uint32_t slot, u_int32_t rmw, uint8_t **blob, size_t *len);
int store_key_write(struct store_gen *g, DB_TXN *t, uint32_t *slot, const uint8_t *blob, size_t len);
int store_key_destroy(struct store_gen *g, DB_TXN *t, uint32_t slot);
/*
 * Overwrite a slot with zeros and free it like store_key_destroy(), without
 * counting it for cmk_store_shred(): for a pool key that moved into a
 * record, whose destruction later shreds every older copy of it.
 */
int store_key_wipe(struct store_gen *g, DB_TXN *t, uint32_t slot);

/* Overwrite and remove the log files recovery no longer needs; *removed counts them. */
int store_remove_old_logs(struct store_gen *g, unsigned *removed);

/*
 * Shred bookkeeping in meta: destroyed keys are counted in the destroying
 * transaction; a shred records the count it has taken care of.
 */
int store_note_destroyed(struct store_gen *g, DB_TXN *t);
int store_shred_mark(struct store_gen *g, uint64_t *destroyed, uint64_t *shredded);
int store_shred_done(struct store_gen *g, uint64_t upto);

#endif
