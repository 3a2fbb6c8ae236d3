/*
 * log.h - the library reports through one callback; it never prints.
 *
 * Messages start with the module or function ("store_open: ...") and never
 * contain key bytes, PEM, tokens or secret ids.  Without a callback, messages
 * are dropped.
 */
#ifndef CMKCERT_LOG_H
#define CMKCERT_LOG_H

enum cmk_log_level {
	CMK_LOG_DEBUG = 0,
	CMK_LOG_INFO = 1,
	CMK_LOG_WARN = 2,
	CMK_LOG_ERROR = 3,
};

typedef void (*cmk_log_fn)(enum cmk_log_level level, const char *msg, void *arg);

/* Install the process-wide log callback and the lowest level passed to it. */
void cmk_set_log(cmk_log_fn fn, void *arg, enum cmk_log_level min_level);

/* Format, escape (cmk_escape: one printable line) and pass to the callback. */
void cmk_log(enum cmk_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A message that can repeat as fast as callers can provoke it (a refused open
 * in a loop) goes through a limit: the first CMK_LOG_LIMIT_BURST messages in
 * each CMK_LOG_LIMIT_MS window are passed, the rest are counted, and the next
 * message passed says how many were left out.  One static limit per call site.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define CMK_LOG_LIMIT_MS 10000
#define CMK_LOG_LIMIT_BURST 5

struct cmk_log_limit {
	pthread_mutex_t mu;
	int64_t window_start;
	unsigned passed;
	unsigned long left_out;
};
#define CMK_LOG_LIMIT_INIT { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0 }

void cmk_log_limited(struct cmk_log_limit *lim, enum cmk_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Name of a level: "debug", "info", "warning", "error". */
const char *cmk_log_level_name(enum cmk_log_level level);

/* The syslog(3) priority of a level: LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR (7, 6, 4, 3). */
int cmk_log_priority(enum cmk_log_level level);

/*
 * True when standard error is the systemd journal's stream: systemd sets
 * $JOURNAL_STREAM to "device:inode" of the stream it connected, and fd 2 is
 * still that stream (not a file or pipe a child was given instead).  Lines
 * written there may then start with "<N>" (N = cmk_log_priority()), which
 * journald takes as the line's priority and strips (sd-daemon(3)).
 */
bool cmk_log_stderr_is_journal(void);

#endif
