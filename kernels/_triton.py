"""The Triton kernels (imported only where Triton is installed; ``TRITON_INTERPRET=1`` runs them on CPU tensors).

Every kernel works on one (frame, channel) plane per program row and a block of pixels per program column, reads
its inputs through their strides (windows of frames and broadcast views need no copy) and writes a contiguous
float32 output. Offsets are computed in int64.
"""
import triton
import triton.language as tl


@triton.jit
def _reflect(i, n):
    # reflect-101 (OpenCV BORDER_REFLECT_101, torch "reflect" padding): -1 -> 1, n -> n - 2; needs radius < n
    i = tl.where(i < 0, -i, i)
    return tl.where(i >= n, 2 * (n - 1) - i, i)


@triton.jit
def _block(C, H, W, BLOCK: tl.constexpr):
    # this program's plane (b * C + c) and its block of BLOCK pixel offsets within the plane, with (h, w)
    plane = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return plane, plane // C, plane % C, offs, offs < H * W, offs // W, offs % W


@triton.jit
def masked_blend_kernel(x_ptr, y_ptr, m_ptr, w_ptr, out_ptr, C, H, W,
                        sxb, sxc, sxh, sxw, syb, syc, syh, syw, smb, smh, smw,
                        BLOCK: tl.constexpr):
    plane, b, c, offs, valid, h, w = _block(C, H, W, BLOCK)
    x = tl.load(x_ptr + b * sxb + c * sxc + h * sxh + w * sxw, mask=valid, other=0.0)
    a = tl.load(m_ptr + b * smb + h * smh + w * smw, mask=valid, other=0.0) * tl.load(w_ptr + b)
    y = tl.load(y_ptr + b * syb + c * syc + h * syh + w * syw, mask=valid & (a != 0.0), other=0.0)
    tl.store(out_ptr + plane * H * W + offs, x + (y - x) * a, mask=valid)


@triton.jit
def blur_rows_kernel(x_ptr, taps_ptr, out_ptr, C, H, W, K, sxb, sxc, sxh, sxw, BLOCK: tl.constexpr):
    plane, b, c, offs, valid, h, w = _block(C, H, W, BLOCK)
    base = x_ptr + b * sxb + c * sxc + h * sxh
    r = K // 2
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, K):
        col = _reflect(w + k - r, W)
        acc += tl.load(taps_ptr + k) * tl.load(base + col * sxw, mask=valid, other=0.0)
    tl.store(out_ptr + plane * H * W + offs, acc, mask=valid)


@triton.jit
def blur_cols_blend_kernel(x_ptr, rows_ptr, taps_ptr, m_ptr, w_ptr, out_ptr, C, H, W, K,
                           sxb, sxc, sxh, sxw, smb, smh, smw, BLOCK: tl.constexpr):
    plane, b, c, offs, valid, h, w = _block(C, H, W, BLOCK)
    x = tl.load(x_ptr + b * sxb + c * sxc + h * sxh + w * sxw, mask=valid, other=0.0)
    a = tl.load(m_ptr + b * smb + h * smh + w * smw, mask=valid, other=0.0) * tl.load(w_ptr + b)
    out = x
    if tl.max(a, axis=0) > 0.0:  # blocks outside the mask cost one read of x and of the mask
        r = K // 2
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for k in range(0, K):
            row = _reflect(h + k - r, H)
            acc += tl.load(taps_ptr + k) * tl.load(rows_ptr + plane * H * W + row * W + w, mask=valid, other=0.0)
        out = x + (acc - x) * a
    tl.store(out_ptr + plane * H * W + offs, out, mask=valid)
