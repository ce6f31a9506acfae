/* spandsp DTMF receiver timing, run by codecs/benches/dtmf.rs on the same audio as our detector
 * (argv[1]: raw s16le 8 kHz file). Prints "dtmf_rx_ns_per_second_of_audio N" and the digits it
 * found, so the two detectors can be compared on output as well as speed. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <tiffio.h>
#include <spandsp.h>

static char found[256];
static int nfound;

static void on_digits(void *user_data, const char *digits, int len)
{
    (void) user_data;
    for (int i = 0; i < len && nfound < 255; i++)
        found[nfound++] = digits[i];
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    static int16_t amp[8000 * 60];
    size_t n = fread(amp, 2, sizeof(amp) / 2, f);
    fclose(f);
    if (n == 0) return 2;
    dtmf_rx_state_t *s = dtmf_rx_init(NULL, on_digits, NULL);
    /* One pass to collect digits. */
    for (size_t i = 0; i < n; i += 160)
        dtmf_rx(s, amp + i, (int) ((n - i) < 160 ? (n - i) : 160));
    found[nfound] = 0;
    int first_pass = nfound;
    const int reps = 200;
    double t0 = now_ns();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < n; i += 160)
            dtmf_rx(s, amp + i, (int) ((n - i) < 160 ? (n - i) : 160));
    double t1 = now_ns();
    double seconds_of_audio = (double) n / 8000.0;
    printf("dtmf_rx_ns_per_second_of_audio %.0f\n", (t1 - t0) / reps / seconds_of_audio);
    printf("digits_found %d\n", first_pass);
    dtmf_rx_free(s);
    return 0;
}
