/* Bilinear crops of rotated square ROIs straight from uint8 frames, for gpuface.ops.geometry.crop_rois on the CPU.
 *
 * The arithmetic is grid_sample's (bilinear, zeros padding, align_corners=False; ATen's CPU kernel
 * GridSamplerKernel.cpp) on a window of the frame that is never materialised: for an output pixel with grid value
 * (gx, gy), normalised to its ROI's window of side `win` whose corner is at frame pixel (wx, wy),
 *     x = (gx + 1) * (win / 2) - 0.5,  x0 = floor(x),  w = x - x0,  e = 1 - w   (likewise y, y0, n, s)
 *     out = ((v(x0, y0) * s*e + v(x0+1, y0) * s*w) + v(x0, y0+1) * n*e) + v(x0+1, y0+1) * n*w,  then / 255
 * where a tap outside the window or outside the frame is 0. Every operation is one float32 IEEE operation, in
 * this order (built with -ffp-contract=off: no fused multiply-adds), so the result is a function of the pixel's own
 * inputs only: the same for any number of ROIs, any split across threads, any batch. (ATen's grid_sample may fuse
 * some of these into FMAs, depending on its build; the two agree within a few float32 ulps of 255.)
 *
 * Work is split into items of ROW output pixels: item t is ROI t / bands, pixels [(t % bands) * ROW, ...), so
 * that one ROI can be shared between threads. Inputs:
 *   frames  uint8, element strides sb, sc, sh, sw (any layout), frame size height x width, 3 channels
 *   grid    float32 (N, size, size, 2) contiguous
 *   plan    int64 (N, 4) contiguous: frame row in the batch, window corner x, y (px, may be negative), window side
 *   out     float32 (N, size, size, 3) contiguous (channels-last crops), values in [0, 1]
 */
#include <stdint.h>

#define ROW 256

int64_t gpuface_crop_items(int64_t n, int64_t size) {
    return n * ((size * size + ROW - 1) / ROW);
}

void gpuface_crop_rois_u8(const uint8_t *frames, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int64_t height,
                          int64_t width, const float *grid, const int64_t *plan, int64_t size, float *out,
                          int64_t first, int64_t last) {
    const int64_t pixels = size * size, bands = (pixels + ROW - 1) / ROW;
    float wts[4][ROW];
    int32_t ix[ROW], iy[ROW];
    uint8_t v[4][3][ROW];
    for (int64_t t = first; t < last; t++) {
        const int64_t i = t / bands, p0 = (t % bands) * ROW;
        const int m = pixels - p0 < ROW ? (int)(pixels - p0) : ROW;
        const int64_t row = plan[4 * i], wx = plan[4 * i + 1], wy = plan[4 * i + 2], win = plan[4 * i + 3];
        const float half = (float)win / 2.0f;
        /* taps are read where they lie inside both the window and the frame: [lo, hi) in window pixels */
        const int64_t xlo = wx < 0 ? -wx : 0, ylo = wy < 0 ? -wy : 0;
        const int64_t xhi = width - wx < win ? width - wx : win, yhi = height - wy < win ? height - wy : win;
        const uint8_t *origin = frames + row * sb + wy * sh + wx * sw;
        const float *g = grid + (i * pixels + p0) * 2;
        float *o = out + (i * pixels + p0) * 3;
        for (int j = 0; j < m; j++) {          /* coordinates and weights */
            const float x = (g[2 * j] + 1.0f) * half - 0.5f;
            const float y = (g[2 * j + 1] + 1.0f) * half - 0.5f;
            int32_t x0 = (int32_t)x, y0 = (int32_t)y;
            x0 -= (float)x0 > x;              /* floor */
            y0 -= (float)y0 > y;
            const float w = x - (float)x0, e = 1.0f - w, n = y - (float)y0, s = 1.0f - n;
            wts[0][j] = s * e;
            wts[1][j] = s * w;
            wts[2][j] = n * e;
            wts[3][j] = n * w;
            ix[j] = x0;
            iy[j] = y0;
        }
        for (int j = 0; j < m; j++) {          /* the four taps' bytes */
            const int64_t x0 = ix[j], y0 = iy[j];
            const uint8_t *a = origin + y0 * sh + x0 * sw;
            if (x0 >= xlo && x0 + 1 < xhi && y0 >= ylo && y0 + 1 < yhi) {
                for (int k = 0; k < 3; k++) {
                    v[0][k][j] = a[k * sc];
                    v[1][k][j] = a[sw + k * sc];
                    v[2][k][j] = a[sh + k * sc];
                    v[3][k][j] = a[sh + sw + k * sc];
                }
            } else {
                const int l = x0 >= xlo && x0 < xhi, r = x0 + 1 >= xlo && x0 + 1 < xhi;
                const int top = y0 >= ylo && y0 < yhi, bottom = y0 + 1 >= ylo && y0 + 1 < yhi;
                for (int k = 0; k < 3; k++) {
                    v[0][k][j] = l && top ? a[k * sc] : 0;
                    v[1][k][j] = r && top ? a[sw + k * sc] : 0;
                    v[2][k][j] = l && bottom ? a[sh + k * sc] : 0;
                    v[3][k][j] = r && bottom ? a[sh + sw + k * sc] : 0;
                }
            }
        }
        for (int k = 0; k < 3; k++)            /* bilinear sums */
            for (int j = 0; j < m; j++)
                o[3 * j + k] = ((((float)v[0][k][j] * wts[0][j]) + ((float)v[1][k][j] * wts[1][j]))
                                + ((float)v[2][k][j] * wts[2][j]) + ((float)v[3][k][j] * wts[3][j])) / 255.0f;
    }
}
