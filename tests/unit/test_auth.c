/* test_auth.c — the client address behind trusted proxies, and CIDRs
 * (auth.c); the keys and the lockout are tested black-box
 * (tests/bb/test_auth.py). */
#include "auth.h"
#include "unit.h"

#include <string.h>

/* as the config loader leaves it: the list and the same, parsed */
static struct auth_cidr parsed[8];
static struct config_auth with_trusted(char **list, size_t n)
{
    struct config_auth a;
    memset(&a, 0, sizeof a);
    a.trusted_proxies = list;
    a.ntrusted = n;
    a.trusted = parsed;
    for (size_t i = 0; i < n; i++)
        CHECK(auth_cidr_parse(list[i], &parsed[i]) == 0);
    return a;
}

static const char *addr_str(const unsigned char a[16], bool v6)
{
    static char out[64];
    snprintf(out, sizeof out, v6 ? "v6" : "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    return out;
}

int main(void)
{
    struct auth_cidr c;
    CHECK(auth_cidr_parse("10.0.0.0/8", &c) == 0 && c.bits == 8 && !c.v6);
    CHECK(auth_cidr_parse("10.1.2.3", &c) == 0 && c.bits == 32);
    CHECK(auth_cidr_parse("::1", &c) == 0 && c.bits == 128 && c.v6);
    CHECK(auth_cidr_parse("fd00::/8", &c) == 0 && c.bits == 8 && c.v6);
    CHECK(auth_cidr_parse("10.0.0.0/33", &c) < 0);
    CHECK(auth_cidr_parse("10.0.0.0/", &c) < 0);
    CHECK(auth_cidr_parse("10.0.0.0/8x", &c) < 0);
    CHECK(auth_cidr_parse("example.com", &c) < 0);
    CHECK(auth_cidr_parse("", &c) < 0);

    char *trusted[] = { "127.0.0.1", "10.9.0.0/16", "::1" };
    struct config_auth a = with_trusted(trusted, 3), none = with_trusted(NULL, 0);
    unsigned char out[16];
    bool v6 = false;
    /* an untrusted peer: its own address, whatever it forwards */
    CHECK(auth_client_addr(&a, "192.0.2.1:5555", "1.1.1.1", 7, out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "192.0.2.1");
    /* no trusted proxies at all: the same */
    CHECK(auth_client_addr(&none, "127.0.0.1:5555", "1.1.1.1", 7, out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "127.0.0.1");
    /* a trusted peer: the nearest untrusted hop, from the right */
    const char *x = "6.6.6.6, 203.0.113.7, 10.9.3.4";
    CHECK(auth_client_addr(&a, "127.0.0.1:1", x, strlen(x), out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "203.0.113.7");
    /* every hop trusted: the leftmost */
    x = "10.9.0.1,10.9.0.2";
    CHECK(auth_client_addr(&a, "127.0.0.1:1", x, strlen(x), out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "10.9.0.1");
    /* a malformed hop stops the walk at the last good address */
    x = "junk, 203.0.113.9";
    CHECK(auth_client_addr(&a, "127.0.0.1:1", x, strlen(x), out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "203.0.113.9");
    x = "203.0.113.9, junk";
    CHECK(auth_client_addr(&a, "127.0.0.1:1", x, strlen(x), out, &v6) == 0);
    CHECK_EQ_STR(addr_str(out, v6), "127.0.0.1");
    /* IPv6 peers and hops, with and without brackets and ports */
    x = "[2001:db8::1]:443";
    CHECK(auth_client_addr(&a, "[::1]:9", x, strlen(x), out, &v6) == 0 && v6 && out[0] == 0x20 && out[15] == 1);
    CHECK(auth_client_addr(&a, "not an address", NULL, 0, out, &v6) < 0);
    UNIT_DONE();
}
