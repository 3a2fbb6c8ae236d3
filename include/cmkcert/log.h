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

/* Name of a level: "debug", "info", "warning", "error". */
const char *cmk_log_level_name(enum cmk_log_level level);

#endif
