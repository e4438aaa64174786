/* rand.h — the small deterministic mixers, generators and hashes shade uses.
 *
 * Not for secrets (trace ids start from getrandom; see trace.c).  These are
 * for spreading load, sampling, request ids, the simulator's reproducible
 * text and the comparators' token hashes.  Several of those sequences are
 * pinned by tests and by stored data (a seeded simulator must say the same
 * words; a per-user shadow sample must pick the same users), so the
 * functions here must never change their output: add a new one instead.
 *
 *   rnd_mix64            splitmix64's finaliser: a bijective 64-bit scrambler
 *   rnd_splitmix64       the splitmix64 output for state x (a hash of x)
 *   rnd_splitmix64_next  splitmix64 as a generator (state advanced in place)
 *   rnd_xorshift64s      xorshift64* as a generator
 *   rnd_fnv1a64          FNV-1a, 64 bits, over bytes (or byte by byte)
 *
 * All are static inline: each is a handful of instructions on a hot path.
 */
#ifndef SHADE_RAND_H
#define SHADE_RAND_H

#include <stddef.h>
#include <stdint.h>

/* 2^64 / the golden ratio: splitmix64's increment, and a fixed non-zero
 * seed for generators that must not start at 0. */
#define RND_GOLDEN 0x9e3779b97f4a7c15ull

/* splitmix64's finaliser (Stafford's "Mix13" constants): every bit of the
 * input reaches every bit of the output; 0 maps to 0. */
static inline uint64_t rnd_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The value splitmix64 gives from state x: a hash of x that is not 0 at 0. */
static inline uint64_t rnd_splitmix64(uint64_t x) { return rnd_mix64(x + RND_GOLDEN); }

/* splitmix64 as a generator: any state (0 too) is fine; period 2^64. */
static inline uint64_t rnd_splitmix64_next(uint64_t *s) { return rnd_mix64(*s += RND_GOLDEN); }

/* xorshift64* (Vigna): a state of 0 would stay 0, so it starts from
 * RND_GOLDEN instead (a caller wanting another start sets it first).
 * The odd multiplier on a non-zero state never returns 0. */
static inline uint64_t rnd_xorshift64s(uint64_t *s)
{
    uint64_t x = *s ? *s : RND_GOLDEN;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* FNV-1a, 64 bits: start from RND_FNV1A64_INIT, or chain from a previous
 * result; rnd_fnv1a64_byte is one step, for callers that fold case or skip
 * bytes as they go. */
#define RND_FNV1A64_INIT 0xcbf29ce484222325ull

static inline uint64_t rnd_fnv1a64_byte(uint64_t h, unsigned char c) { return (h ^ c) * 0x100000001b3ull; }

static inline uint64_t rnd_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = rnd_fnv1a64_byte(h, s[i]);
    return h;
}

#endif
