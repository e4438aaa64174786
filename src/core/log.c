#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_level_min = LOG_INFO;

void log_set_level(const char *name)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    log_level_min = LOG_INFO;
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            log_level_min = (enum log_level)i;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const tags[] = { "debug", "info", "warn", "error" };
    if (lvl < log_level_min)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %s ", ts.tv_nsec / 1000000, tags[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    line[n++] = '\n';
    fwrite(line, 1, n, stderr); /* one write per line: lines from threads do not interleave */
}
