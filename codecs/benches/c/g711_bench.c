/* spandsp G.711 timing, run by codecs/benches/g711.rs so spandsp appears in the same run as the
 * Rust implementations. Prints "name ns_per_frame" lines (160-sample frames). */
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include <tiffio.h>
#include <spandsp.h>

#define FRAME 160
#define FRAMES 64

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static volatile uint32_t sink;

int main(void)
{
    static int16_t pcm[FRAMES][FRAME];
    static uint8_t codes[FRAMES][FRAME];
    static int16_t out[FRAME];
    static uint8_t xc[FRAME];
    uint32_t seed = 12345;
    for (int f = 0; f < FRAMES; f++)
        for (int i = 0; i < FRAME; i++) {
            seed = seed * 1664525u + 1013904223u;
            pcm[f][i] = (int16_t) (seed >> 16);
            codes[f][i] = (uint8_t) (seed >> 8);
        }
    const long iters = 400000;
    for (int pass = 0; pass < 2; pass++) {
        double t0, t1;
        uint32_t acc = 0;
        /* encode ulaw */
        t0 = now_ns();
        for (long n = 0; n < iters; n++) {
            const int16_t *p = pcm[n & (FRAMES - 1)];
            for (int i = 0; i < FRAME; i++) xc[i] = linear_to_ulaw(p[i]);
            acc += xc[n % FRAME];
        }
        t1 = now_ns();
        if (pass) printf("ulaw_encode %.1f\n", (t1 - t0) / iters);
        t0 = now_ns();
        for (long n = 0; n < iters; n++) {
            const int16_t *p = pcm[n & (FRAMES - 1)];
            for (int i = 0; i < FRAME; i++) xc[i] = linear_to_alaw(p[i]);
            acc += xc[n % FRAME];
        }
        t1 = now_ns();
        if (pass) printf("alaw_encode %.1f\n", (t1 - t0) / iters);
        t0 = now_ns();
        for (long n = 0; n < iters; n++) {
            const uint8_t *c = codes[n & (FRAMES - 1)];
            for (int i = 0; i < FRAME; i++) out[i] = ulaw_to_linear(c[i]);
            acc += out[n % FRAME];
        }
        t1 = now_ns();
        if (pass) printf("ulaw_decode %.1f\n", (t1 - t0) / iters);
        t0 = now_ns();
        for (long n = 0; n < iters; n++) {
            const uint8_t *c = codes[n & (FRAMES - 1)];
            for (int i = 0; i < FRAME; i++) out[i] = alaw_to_linear(c[i]);
            acc += out[n % FRAME];
        }
        t1 = now_ns();
        if (pass) printf("alaw_decode %.1f\n", (t1 - t0) / iters);
        t0 = now_ns();
        for (long n = 0; n < iters; n++) {
            const uint8_t *c = codes[n & (FRAMES - 1)];
            for (int i = 0; i < FRAME; i++) xc[i] = alaw_to_ulaw(c[i]);
            acc += xc[n % FRAME];
        }
        t1 = now_ns();
        if (pass) printf("alaw_to_ulaw %.1f\n", (t1 - t0) / iters);
        sink = acc;
    }
    return 0;
}
