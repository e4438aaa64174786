/* unit.h — a tiny test harness: each test file is one program. */
#ifndef SHADE_UNIT_H
#define SHADE_UNIT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_failures, unit_checks;
#define CHECK(cond) do { unit_checks++; if (!(cond)) { unit_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); unit_checks++; \
    if (_a != _b) { unit_failures++; fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", \
    __FILE__, __LINE__, #a, _a, _b); } } while (0)
#define CHECK_EQ_STR(a, b) do { const char *_a = (a), *_b = (b); unit_checks++; \
    if (!_a || strcmp(_a, _b) != 0) { unit_failures++; fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", \
    __FILE__, __LINE__, #a, _a ? _a : "(null)", _b); } } while (0)
#define UNIT_DONE() do { printf("%s: %d checks, %d failed\n", __FILE__, unit_checks, unit_failures); \
    return unit_failures ? 1 : 0; } while (0)
#endif
