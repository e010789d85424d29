/* Copy horizontal spans of pixels from one uint8 image batch into another, for gpuface.ops.anonymize on the CPU.
 *
 * A blur or mosaic mask is a union of spans, one per face and pixel row: columns [x0, x1) of row y of frame b.
 * Copying the coarse image's pixels on every span into the frame writes exactly the masked pixels (a pixel that
 * two overlapping spans cover gets the same value twice), instead of a select over the faces' whole bounding box
 * (in torch: a coverage mask rasterised over the box, then two uint8 multiplies and an add per channel and pixel).
 * Pure copies: the result is the torch path's bit for bit.
 *
 *   dst     uint8, element strides db, dc, dh, dw (any layout; channels-last rows are copied with memcpy)
 *   src     uint8, element strides sb, sc, sh, sw, the same shape as dst
 *   spans   int64 (n, 4) contiguous: frame b, row y, first column x0, end column x1 (x1 > x0), inside both
 */
#include <stdint.h>
#include <string.h>

void gpuface_copy_spans_u8(uint8_t *dst, int64_t db, int64_t dc, int64_t dh, int64_t dw, const uint8_t *src,
                           int64_t sb, int64_t sc, int64_t sh, int64_t sw, int64_t channels, const int64_t *spans,
                           int64_t n) {
    const int packed = dc == 1 && sc == 1 && dw == channels && sw == channels;
    for (int64_t i = 0; i < n; i++) {
        const int64_t b = spans[4 * i], y = spans[4 * i + 1], x0 = spans[4 * i + 2], x1 = spans[4 * i + 3];
        uint8_t *d = dst + b * db + y * dh + x0 * dw;
        const uint8_t *s = src + b * sb + y * sh + x0 * sw;
        if (packed) {
            memcpy(d, s, (size_t)((x1 - x0) * channels));
            continue;
        }
        for (int64_t x = 0; x < x1 - x0; x++)
            for (int64_t c = 0; c < channels; c++)
                d[x * dw + c * dc] = s[x * sw + c * sc];
    }
}
