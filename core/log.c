/*
 * log.c - the library's single reporting channel: a callback set by main().
 */
#include <stdarg.h>
#include <stdio.h>

#include "cmkcert/log.h"

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
	char msg[1024];
	va_list ap;

	if (log_fn == NULL || level < log_min)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_fn(level, msg, log_arg);
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
