/*
 * log.c - the library's single reporting channel: a callback set by main().
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cmkcert/log.h"
#include "cmkcert/util.h"

static cmk_log_fn log_fn;
static void *log_arg;
static enum cmk_log_level log_min = CMK_LOG_INFO;

void cmk_set_log(cmk_log_fn fn, void *arg, enum cmk_log_level min_level)
{
	log_fn = fn;
	log_arg = arg;
	log_min = min_level;
}

void cmk_log(enum cmk_log_level level, const char *fmt, ...)
{
	char msg[1024], safe[1024];
	va_list ap;

	if (log_fn == NULL || level < log_min)
		return;
	va_start(ap, fmt);
	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		msg[0] = '\0';
	va_end(ap);
	/* Messages quote names, paths and server text: each becomes one printable line whatever they held. */
	cmk_escape(safe, sizeof(safe), msg, strlen(msg), 0);
	log_fn(level, safe, log_arg);
}

void cmk_log_limited(struct cmk_log_limit *lim, enum cmk_log_level level, const char *fmt, ...)
{
	unsigned long left_out = 0;
	int64_t now = cmk_monotonic_ms();
	char msg[1024], safe[1024];
	size_t len;
	va_list ap;
	bool pass;

	if (log_fn == NULL || level < log_min)
		return;
	pthread_mutex_lock(&lim->mu);
	if (lim->window_start == 0 || now - lim->window_start >= CMK_LOG_LIMIT_MS) {
		lim->window_start = now;
		lim->passed = 0;
	}
	pass = lim->passed < CMK_LOG_LIMIT_BURST;
	if (pass) {
		lim->passed++;
		left_out = lim->left_out;
		lim->left_out = 0;
	} else {
		lim->left_out++;
	}
	pthread_mutex_unlock(&lim->mu);
	if (!pass)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	len = strlen(msg);
	if (left_out > 0 && len < sizeof(msg))
		snprintf(msg + len, sizeof(msg) - len, " (%lu like this left out)", left_out);
	/* As in cmk_log(): these repeat what callers provoke (file names looked up), so they are escaped too. */
	cmk_escape(safe, sizeof(safe), msg, strlen(msg), 0);
	log_fn(level, safe, log_arg);
}

const char *cmk_log_level_name(enum cmk_log_level level)
{
	switch (level) {
	case CMK_LOG_DEBUG: return "debug";
	case CMK_LOG_INFO: return "info";
	case CMK_LOG_WARN: return "warning";
	case CMK_LOG_ERROR: return "error";
	}
	return "?";
}

int cmk_log_priority(enum cmk_log_level level)
{
	switch (level) {
	case CMK_LOG_DEBUG: return LOG_DEBUG;
	case CMK_LOG_INFO: return LOG_INFO;
	case CMK_LOG_WARN: return LOG_WARNING;
	case CMK_LOG_ERROR: return LOG_ERR;
	}
	return LOG_ERR;
}

bool cmk_log_stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (v == NULL || sscanf(v, "%llu:%llu%n", &dev, &ino, &end) != 2 || v[end] != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
