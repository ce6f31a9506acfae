/* Reference G.711 output from spandsp, for codecs/tests/g711_reference.rs.
 * Prints "E x ulaw alaw" for every 16-bit input and "D code ulaw_lin alaw_lin u2a a2u" for every
 * code. spandsp is an independent implementation (libspandsp-dev). */
#include <stdio.h>
#include <stdint.h>
#include <tiffio.h>
#include <spandsp.h>

int main(void)
{
    for (int x = -32768; x < 32768; x++)
        printf("E %d %u %u\n", x, linear_to_ulaw(x), linear_to_alaw(x));
    for (int c = 0; c < 256; c++)
        printf("D %d %d %d %u %u\n", c, ulaw_to_linear(c), alaw_to_linear(c), ulaw_to_alaw(c), alaw_to_ulaw(c));
    return 0;
}
