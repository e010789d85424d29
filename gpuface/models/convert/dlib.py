"""dlib ``.dat`` (serialised ``dnn`` network) → PyTorch ``state_dict`` for
:class:`gpuface.models.dlib_resnet.DlibResNet`.

A pure-Python reader of dlib's serialisation (``dlib/serialize.h``): integers are one byte ``sign << 7 |
byte count`` followed by that many little-endian bytes; strings are a length and bytes; tensors are
``version (2), n, k, nr, nc`` then raw little-endian float32. The file stores the layers from the input
(``input_rgb_image_sized``) to the loss; each ``con_`` record starts with its parameter tensor (filters
``(O, I, kh, kw)`` then O biases) followed by ``num_filters, nr, nc, stride_y, stride_x, padding_y,
padding_x``; each ``affine_`` record with its parameters (gamma then beta: batch norm folded); ``fc_`` holds
an ``(inputs, outputs)`` matrix (no bias in the face model). No dlib needed at run time.

Raises: :class:`gpuface.core.errors.WeightsError` when the file does not hold the expected network.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from gpuface.core.errors import WeightsError


class _Reader:
    def __init__(self, data: bytes):
        self.d = data

    def int(self, p: int) -> tuple[int, int]:
        b = self.d[p]
        n = b & 0x0F
        v = int.from_bytes(self.d[p + 1:p + 1 + n], "little") if n else 0
        return (-v if b & 0x80 else v), p + 1 + n

    def tensor(self, p: int):
        """(dims, float32 array, next position) of a tensor record at p, or None."""
        try:
            version, q = self.int(p)
            if version != 2:
                return None
            dims = []
            for _ in range(4):
                x, q = self.int(q)
                dims.append(x)
        except IndexError:
            return None
        n = int(np.prod(dims))
        if n <= 0 or any(x <= 0 for x in dims) or q + 4 * n > len(self.d):
            return None
        return dims, np.frombuffer(self.d[q:q + 4 * n], dtype="<f4").copy(), q + 4 * n


def read_dlib_resnet(data: bytes) -> dict[str, torch.Tensor]:
    """The face recognition ResNet's weights: ``conv{i}.weight/bias`` (29 convolutions, file order),
    ``affine{i}.weight/bias`` (29) and ``fc.weight`` (128, 256)."""
    r = _Reader(data)
    if b"input_rgb_image_sized" not in data[:4096]:
        raise WeightsError("not a dlib face recognition network (.dat without input_rgb_image_sized)")
    state: dict[str, torch.Tensor] = {}
    convs = affines = 0
    for m in re.finditer(rb"con_\d|affine_|fc_\d?", data):
        tag, p = m.group(), m.end()
        if tag.startswith(b"con_"):
            rec = r.tensor(p)
            if rec is None:
                continue
            _, params, q = rec
            fields = []
            for _ in range(7):
                v, q = r.int(q)
                fields.append(v)
            out, kh, kw = fields[:3]
            cin = (params.size - out) // (out * kh * kw)
            if cin * out * kh * kw + out != params.size:
                raise WeightsError(f"con_ record {convs}: {params.size} parameters do not fit {out}x?x{kh}x{kw}")
            state[f"conv{convs}.weight"] = torch.from_numpy(params[:-out].reshape(out, cin, kh, kw).copy())
            state[f"conv{convs}.bias"] = torch.from_numpy(params[-out:].copy())
            convs += 1
        elif tag == b"affine_":
            rec = r.tensor(p)
            if rec is None:
                continue
            _, params, _ = rec
            c = params.size // 2
            state[f"affine{affines}.weight"], state[f"affine{affines}.bias"] = (
                torch.from_numpy(params[:c].copy()), torch.from_numpy(params[c:].copy()))
            affines += 1
        else:
            for q in range(p, min(p + 256, len(data))):  # the matrix follows a few scalar fields
                rec = r.tensor(q)
                if rec is not None and rec[1].size == 256 * 128:
                    state["fc.weight"] = torch.from_numpy(rec[1].reshape(256, 128).T.copy())
                    break
    if convs != 29 or affines != 29 or "fc.weight" not in state:
        raise WeightsError(f"unexpected dlib network: {convs} convolutions, {affines} affine layers, "
                           f"fc {'found' if 'fc.weight' in state else 'missing'} (want 29, 29, found)")
    return state


__all__ = ["read_dlib_resnet"]
