"""TFLiteGraph: an ``nn.Module`` that runs a converted TFLite graph with torch ops, batched, NCHW inside.

The graph spec and constants come from :func:`gpuface.models.convert.tflite.read_tflite`; the constants are the
module's buffers (its ``state_dict``), so ``.to(device)``, ``.half()`` and ``torch.compile`` work as for any
module. Spatial operators (convolutions, pooling, padding, resizing, depth-to-space) run in NCHW; operators
whose semantics depend on TensorFlow's NHWC layout (reshape, transpose, reductions, slices, concatenation)
see NHWC tensors; the module permutes between the two only where the graph needs it.

Batching: TFLite graphs are exported with a batch of 1. Here axis 0 is the batch everywhere: ``RESHAPE``
keeps the input's batch size, ``STRIDED_SLICE`` never slices or drops axis 0, constants are broadcast over
it. Outputs therefore always have a leading batch axis.

Semantics follow the TFLite reference kernels (``tensorflow/lite/kernels/``): "SAME" padding puts the odd
extra pixel at the bottom/right; ``RESIZE_BILINEAR`` with half-pixel centres equals
``F.interpolate(align_corners=False)``; ``DEPTH_TO_SPACE`` uses TF's DCR channel order.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_SPATIAL = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESIZE_BILINEAR",
                      "DEPTH_TO_SPACE", "PAD"})
_ELEMENTWISE = frozenset({"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "PRELU", "RELU", "RELU6",
                          "LOGISTIC", "TANH", "NEG", "RSQRT", "SQRT"})
_NHWC_AXIS_IN_NCHW = (0, 2, 3, 1)  # TF axis → torch axis for 4-D tensors


def _act(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    return torch.tanh(x)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis: (before, after); the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFLiteGraph(nn.Module):
    """Executes a TFLite graph spec (see :func:`gpuface.models.convert.tflite.read_tflite`).

    Args:
        spec: the JSON graph spec.
        tensors: its float32 constants (``op<i>_in<j>`` keys); omit to allocate zeros and ``load_state_dict``.

    ``forward(*inputs)``: one tensor per graph input; 4-D inputs are NCHW (B, C, H, W), others as in TF.
    Returns a tuple with one tensor per graph output, in TF layout (NHWC for 4-D), batch first.
    """

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None,
                 shapes: dict[str, list[int]] | None = None):
        super().__init__()
        self.spec = spec
        if tensors is None:
            tensors = {k: torch.zeros(s) for k, s in (shapes or {}).items()}
        for key, value in tensors.items():
            self.register_buffer(key, value.float().contiguous())

    def _const(self, key: str, like: torch.Tensor) -> torch.Tensor:
        c = getattr(self, key)
        return c if c.dtype == like.dtype else c.to(like.dtype)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[int, tuple[torch.Tensor, bool]] = {}  # id -> (tensor, is_nchw)
        for io, x in zip(self.spec["inputs"], inputs):
            values[io["id"]] = (x, x.dim() == 4)
        for op in self.spec["ops"]:
            out = self._run(op, values)
            values[op["outputs"][0]] = out
        results = []
        for io in self.spec["outputs"]:
            x, nchw = values[io["id"]]
            results.append(x.permute(0, 2, 3, 1) if nchw else x)
        return tuple(results)

    # -- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _nhwc(v: tuple[torch.Tensor, bool]) -> torch.Tensor:
        return v[0].permute(0, 2, 3, 1) if v[1] else v[0]

    @staticmethod
    def _nchw(v: tuple[torch.Tensor, bool]) -> torch.Tensor:
        return v[0] if v[1] or v[0].dim() != 4 else v[0].permute(0, 3, 1, 2)

    def _run(self, op: dict[str, Any], values) -> tuple[torch.Tensor, bool]:
        kind, o, refs = op["type"], op["options"], op["inputs"]
        act = [values[r] for r in refs if isinstance(r, int)]
        if kind in _SPATIAL:
            x = self._nchw(act[0])
            return self._spatial(kind, x, o, refs), True
        if kind in _ELEMENTWISE:
            return self._elementwise(kind, o, refs, values)
        xs = [self._nhwc(v) for v in act]
        return self._nhwc_op(kind, o, refs, xs), False

    def _spatial(self, kind: str, x: torch.Tensor, o: dict, refs: list) -> torch.Tensor:
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = self._const(refs[1], x)
            b = self._const(refs[2], x) if len(refs) > 2 and isinstance(refs[2], str) else None
            kh, kw = w.shape[-2:]
            (sh, sw), (dh, dw) = o["stride"], o["dilation"]
            if o["padding"] == "same":
                t, bo = _same_pad(x.shape[2], kh, sh, dh)
                le, r = _same_pad(x.shape[3], kw, sw, dw)
                if t == bo and le == r:
                    padding = (t, le)
                else:
                    x, padding = F.pad(x, (le, r, t, bo)), 0
            else:
                padding = 0
            groups = x.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
            return _act(F.conv2d(x, w, b, (sh, sw), padding, (dh, dw), groups), o["activation"])
        if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            (kh, kw), (sh, sw) = o["kernel"], o["stride"]
            if o["padding"] == "same":
                t, bo = _same_pad(x.shape[2], kh, sh, 1)
                le, r = _same_pad(x.shape[3], kw, sw, 1)
                if kind == "AVERAGE_POOL_2D" and (t or bo or le or r):
                    raise NotImplementedError("SAME-padded AVERAGE_POOL_2D")
                x = F.pad(x, (le, r, t, bo), value=-math.inf) if (t or bo or le or r) else x
            pool = F.max_pool2d if kind == "MAX_POOL_2D" else F.avg_pool2d
            return _act(pool(x, (kh, kw), (sh, sw)), o["activation"])
        if kind == "PAD":
            (n0, n1), (t, bo), (le, r), (c0, c1) = o["in1"]
            if n0 or n1:
                raise NotImplementedError("PAD on the batch axis")
            return F.pad(x, (le, r, t, bo, c0, c1))
        if kind == "RESIZE_BILINEAR":
            size = o["in1"]
            if not o["half_pixel"] and not o["align_corners"]:
                raise NotImplementedError("RESIZE_BILINEAR without half-pixel centres or aligned corners")
            return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=o["align_corners"])
        # DEPTH_TO_SPACE, TF "DCR": output channel c of block offset (i, j) is input channel (i*bs + j)*C + c
        bs = o["block"]
        b, c, h, w = x.shape
        x = x.view(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(b, c // (bs * bs), h * bs, w * bs)

    def _elementwise(self, kind: str, o: dict, refs: list, values) -> tuple[torch.Tensor, bool]:
        act = [values[r] for r in refs if isinstance(r, int)]
        nchw = any(v[1] for v in act) and all(v[0].dim() == 4 for v in act)
        like = act[0][0]
        args = []
        for r in refs:
            if isinstance(r, int):
                args.append(self._nchw(values[r]) if nchw else self._nhwc(values[r]))
            elif isinstance(r, str):
                c = self._const(r, like)
                if kind == "PRELU" and c.dim() == 1:
                    args.append(c)
                elif nchw and c.dim():
                    c = c.reshape((1,) * (4 - c.dim()) + tuple(c.shape)).permute(0, 3, 1, 2)
                    args.append(c)
                else:
                    args.append(c)
        x = args[0]
        if kind == "ADD":
            y = x + args[1]
        elif kind == "SUB":
            y = x - args[1]
        elif kind == "MUL":
            y = x * args[1]
        elif kind == "DIV":
            y = x / args[1]
        elif kind == "SQUARED_DIFFERENCE":
            y = (x - args[1]).square()
        elif kind == "PRELU":
            a = args[1]
            y = F.prelu(x, a) if a.dim() == 1 else torch.where(x >= 0, x, x * a)
        elif kind == "RELU":
            y = F.relu(x)
        elif kind == "RELU6":
            y = F.relu6(x)
        elif kind == "LOGISTIC":
            y = torch.sigmoid(x)
        elif kind == "TANH":
            y = torch.tanh(x)
        elif kind == "NEG":
            y = -x
        elif kind == "RSQRT":
            y = torch.rsqrt(x)
        else:  # SQRT
            y = torch.sqrt(x)
        return _act(y, o.get("activation")), nchw

    def _nhwc_op(self, kind: str, o: dict, refs: list, xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0]
        batch = x.shape[0]
        if kind == "RESHAPE":
            shape = list(o.get("in1", o.get("new_shape")))
            shape = [batch] + shape[1:] if len(shape) > 1 and shape[0] in (1, -1) else [batch] + shape
            return x.reshape(shape)
        if kind == "TRANSPOSE":
            return x.permute(o["in1"])
        if kind in ("MEAN", "SUM"):
            axes = o["in1"] if isinstance(o["in1"], list) else [o["in1"]]
            fn = torch.mean if kind == "MEAN" else torch.sum
            return fn(x, dim=[a % x.dim() for a in axes], keepdim=o["keep_dims"])
        if kind == "CONCATENATION":
            acts, parts = iter(xs), []
            for r in refs:
                if isinstance(r, str):
                    c = self._const(r, x)
                    parts.append(c.expand((batch,) + tuple(c.shape[1:])))
                else:
                    parts.append(next(acts))
            return _act(torch.cat(parts, dim=o["axis"]), o["activation"])
        if kind == "STRIDED_SLICE":
            begin, end, strides = o["in1"], o["in2"], o["in3"]
            index: list[Any] = [slice(None)]
            for d in range(1, len(begin)):
                if o["shrink_mask"] >> d & 1:
                    index.append(begin[d])
                    continue
                b = None if o["begin_mask"] >> d & 1 else begin[d]
                e = None if o["end_mask"] >> d & 1 else end[d]
                index.append(slice(b, e, strides[d]))
            return x[tuple(index)]
        raise NotImplementedError(kind)


__all__ = ["TFLiteGraph"]
