/* spandsp DTMF receiver timing, run by codecs/benches/dtmf.rs so spandsp appears in the same run
 * as our detector. The signal is the bench's: common::speechlike(8000, 11) scaled by 1/4 plus the
 * digits "159D" (80 ms on / 80 ms off each, -10 dBm0 per tone, from spandsp's own generator),
 * i.e. one second of audio. Prints "key value" lines:
 *   dtmf_rx_ns_per_second_of_audio N
 *   dtmf_rx_digits_found N          (sanity: what spandsp heard in that second) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <tiffio.h>
#include <spandsp.h>

#define SAMPLES 8000
#define FRAME 160

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The same formula and LCG as codecs/benches/common.rs speechlike(). */
static void speechlike(int16_t *out, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        double t = i / 8000.0;
        double env = 0.2 + 0.8 * (0.5 + 0.5 * sin(2.0 * M_PI * 3.0 * t));
        double f0 = 140.0 + 30.0 * sin(2.0 * M_PI * 0.7 * t);
        double v = 0.0;
        for (int h = 1; h < 8; h++)
            v += sin(2.0 * M_PI * f0 * h * t) / h;
        seed = seed * 1664525u + 1013904223u;
        double noise = (seed >> 16) / 65536.0 - 0.5;
        double x = (v * 0.35 + noise * 0.05) * env * 32767.0;
        if (x > 32767.0) x = 32767.0;
        if (x < -32768.0) x = -32768.0;
        out[i] = (int16_t) x;
    }
}

static int found;
static void on_digits(void *user, const char *digits, int len)
{
    (void) user;
    (void) digits;
    found += len;
}

int main(void)
{
    static int16_t signal[SAMPLES];
    static int16_t tones[SAMPLES];
    speechlike(signal, SAMPLES, 11);
    memset(tones, 0, sizeof(tones));
    dtmf_tx_state_t *tx = dtmf_tx_init(NULL);
    dtmf_tx_set_level(tx, -10, 0);
    dtmf_tx_set_timing(tx, 80, 80);
    dtmf_tx_put(tx, "159D", -1);
    int got = 0;
    while (got < SAMPLES) {
        int n = dtmf_tx(tx, tones + got, SAMPLES - got);
        if (n <= 0) break;
        got += n;
    }
    for (int i = 0; i < SAMPLES; i++) {
        int v = signal[i] / 4 + tones[i];
        signal[i] = (int16_t) (v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }

    dtmf_rx_state_t *rx = dtmf_rx_init(NULL, on_digits, NULL);
    /* Warm-up and sanity pass. */
    for (int i = 0; i < SAMPLES; i += FRAME) dtmf_rx(rx, signal + i, FRAME);
    int sanity = found;
    const int iters = 400;
    double best = 1e30;
    for (int pass = 0; pass < 5; pass++) {
        double t0 = now_ns();
        for (int k = 0; k < iters; k++) {
            dtmf_rx_init(rx, on_digits, NULL);
            for (int i = 0; i < SAMPLES; i += FRAME) dtmf_rx(rx, signal + i, FRAME);
        }
        double per = (now_ns() - t0) / iters;
        if (per < best) best = per;
    }
    printf("dtmf_rx_ns_per_second_of_audio %.0f\n", best);
    printf("dtmf_rx_digits_found %d\n", sanity);
    dtmf_rx_free(rx);
    dtmf_tx_free(tx);
    return 0;
}
