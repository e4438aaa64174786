// srcs: src/http/h1.c src/core/buf.c
/* Fuzz request framing (h1.c) against itself: the input, fed in pieces
 * whose sizes come from its first bytes, must frame exactly as when fed in
 * one piece (same requests, headers, body bytes, same error), and the
 * decoder must never consume more than it was given.  A parser that could
 * be steered by how TCP splits the bytes is a smuggling primitive.  The
 * same bytes are also parsed as a response head. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/unit/h1_driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    /* first 4 bytes: piece sizes (1..64), cycled */
    size_t cuts[4];
    for (int i = 0; i < 4; i++)
        cuts[i] = (size_t)(data[i] % 64) + 1;
    const char *in = (const char *)data + 4;
    size_t n = size - 4;
    char *whole = drv_frame(in, n, NULL, 0);
    char *pieces = drv_frame(in, n, cuts, 4);
    if (strcmp(whole, pieces) != 0)
        abort();
    size_t one = 1;
    if (n < 4096) {
        char *bytes = drv_frame(in, n, &one, 1);
        if (strcmp(whole, bytes) != 0)
            abort();
        free(bytes);
    }
    free(whole);
    free(pieces);
    /* the same bytes as a backend's response head */
    size_t scan = 0, hl = h1_head_end(in, n, &scan);
    if (hl) {
        struct http_hdr h[16];
        struct h1_response rs;
        const char *msg;
        if (h1_parse_response(in, hl, &rs, h, 16, &msg) == 0) {
            if (rs.status < 100 || rs.status > 599 || rs.nhdrs > 16)
                abort();
            for (size_t i = 0; i < rs.nhdrs; i++)
                if (h[i].name < in || h[i].value + h[i].value_len > in + hl)
                    abort();
        }
    }
    return 0;
}
