"""TFLite flatbuffer → PyTorch: a graph spec (JSON) and a ``state_dict`` for
:class:`gpuface.models.tflite_graph.TFLiteGraph`.

The MediaPipe face models (BlazeFace short and full range, FaceMesh v2, the blendshapes MLP-Mixer) are float16
TFLite graphs. This reader parses the flatbuffer with the ``tflite`` package (pure Python, no TensorFlow), folds
every constant sub-graph (``DEQUANTIZE`` of float16 weights, ``DENSIFY`` of CSR-sparse weights) into float32
tensors, stores convolution weights in torch layout, and describes the remaining operators as a list of plain
records. :class:`~gpuface.models.tflite_graph.TFLiteGraph` executes that list with torch ops, NCHW inside.

Layout facts (TFLite stores NHWC, torch wants NCHW): ``CONV_2D`` kernels are ``[O, kh, kw, I]`` → ``(O, I, kh, kw)``;
``DEPTHWISE_CONV_2D`` kernels ``[1, kh, kw, C]`` → ``(C, 1, kh, kw)``; ``PRELU`` alphas ``[1, 1, C]`` → ``(C,)``.

Reference: TensorFlow Lite schema ``tensorflow/lite/schema/schema.fbs`` (operators, options, sparsity format).

Raises (all functions): :class:`gpuface.core.errors.WeightsError` for a file that is not a TFLite model or uses an
operator this reader does not implement.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from gpuface.core.errors import WeightsError

# Operators the runtime executes (TFLiteGraph); everything else must fold to a constant at conversion time.
SUPPORTED_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "ADD", "SUB", "MUL", "DIV",
    "SQUARED_DIFFERENCE", "PRELU", "RELU", "RELU6", "LOGISTIC", "TANH", "NEG", "RSQRT", "SQRT", "RESHAPE",
    "TRANSPOSE", "CONCATENATION", "MEAN", "SUM", "STRIDED_SLICE", "RESIZE_BILINEAR", "DEPTH_TO_SPACE",
})
_FOLDABLE = frozenset({"DEQUANTIZE", "DENSIFY"})
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}
_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6", 4: "tanh"}


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _options(op, cls_name: str):
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return None
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _index_vector(dim, which: str) -> np.ndarray:
    import tflite

    kind = getattr(dim, f"Array{which}Type")()
    table = getattr(dim, f"Array{which}")()
    cls = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
           tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
           tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}[kind]
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def _densify(values: np.ndarray, shape: list[int], sparsity) -> np.ndarray:
    """Expand a TFLite sparse tensor (dense / CSR dimensions, no block map) into a dense array of ``shape``."""
    if sparsity.BlockMapLength():
        raise WeightsError("TFLite block-sparse tensors are not supported")
    order = sparsity.TraversalOrderAsNumpy().tolist()
    if order != list(range(len(shape))):
        raise WeightsError(f"TFLite sparse traversal order {order} is not supported")
    dense = np.zeros(shape, dtype=values.dtype)
    dims = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
    flat_in = iter(values.tolist())

    def walk(level: int, prefix: tuple, parent: int) -> None:
        dim = dims[level]
        if dim.Format() == 0:  # DENSE
            coords = [(i, parent * dim.DenseSize() + i) for i in range(dim.DenseSize())]
        else:  # SPARSE_CSR
            seg, idx = _index_vector(dim, "Segments"), _index_vector(dim, "Indices")
            coords = [(int(idx[k]), k) for k in range(seg[parent], seg[parent + 1])]
        for coord, pos in coords:
            if level + 1 == len(dims):
                dense[prefix + (coord,)] = next(flat_in)
            else:
                walk(level + 1, prefix + (coord,), pos)

    walk(0, (), 0)
    return dense


def read_tflite(source: str | os.PathLike | bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Parse a TFLite model into a graph spec and its float32 constants.

    Args:
        source: path of a ``.tflite`` file, or its bytes.

    Returns:
        ``(spec, tensors)``. ``spec`` is JSON-serialisable: ``{"inputs": [{"id", "shape"}], "outputs": [...],
        "ops": [{"type", "inputs", "outputs", "options"}]}`` where an op input is an activation tensor id (int),
        a key of ``tensors`` (str) or ``None``; integer constants (shapes, axes, paddings, permutations) are
        inlined into ``options``. ``tensors`` maps keys ``op<i>_in<j>`` to float32 tensors in torch layout.

    Raises:
        WeightsError: not a TFLite flatbuffer, more than one subgraph, or an unsupported operator.
    """
    try:
        import tflite
    except ImportError as e:  # pragma: no cover - core dependency
        raise WeightsError("the 'tflite' package is needed to convert MediaPipe models (pip install tflite)") from e
    buf = source if isinstance(source, bytes) else open(source, "rb").read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise WeightsError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise WeightsError(f"expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    op_names = _names(tflite.BuiltinOperator)

    consts: dict[int, np.ndarray] = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            continue
        arr = np.frombuffer(data.tobytes(), dtype=_DTYPES[tensor.Type()])
        if tensor.Sparsity() is None:
            shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
            arr = arr.reshape(shape)
        consts[t] = arr

    def shape_of(t: int) -> list[int]:
        return graph.Tensors(t).ShapeAsNumpy().tolist() if graph.Tensors(t).ShapeLength() else []

    ops, tensors = [], {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        outs = [op.Outputs(j) for j in range(op.OutputsLength())]
        if kind in _FOLDABLE:
            src = ins[0]
            if src not in consts:
                raise WeightsError(f"op {i} {kind}: input is not a constant")
            if kind == "DENSIFY":
                consts[outs[0]] = _densify(consts[src], shape_of(outs[0]), graph.Tensors(src).Sparsity())
            else:
                consts[outs[0]] = consts[src].astype(np.float32).reshape(shape_of(outs[0]))
            continue
        if kind not in SUPPORTED_OPS:
            raise WeightsError(f"TFLite operator {kind} (op {i}) is not supported")
        options: dict[str, Any] = {}
        refs: list[int | str | None] = []
        for j, t in enumerate(ins):
            if t < 0:
                refs.append(None)
            elif t in consts and consts[t].dtype.kind in "iu":
                options[f"in{j}"] = consts[t].tolist()
                refs.append(None)
            elif t in consts:
                key = f"op{i}_in{j}"
                tensors[key] = _torch_layout(kind, j, consts[t])
                refs.append(key)
            else:
                refs.append(t)
        options.update(_op_options(op, kind))
        ops.append({"type": kind, "inputs": refs, "outputs": outs, "options": options})
    io = lambda n, get: [{"id": get(j), "shape": shape_of(get(j))} for j in range(n)]  # noqa: E731
    spec = {"inputs": io(graph.InputsLength(), graph.Inputs), "outputs": io(graph.OutputsLength(), graph.Outputs),
            "ops": ops}
    return spec, tensors


def _torch_layout(kind: str, slot: int, arr: np.ndarray) -> torch.Tensor:
    t = torch.tensor(np.asarray(arr, dtype=np.float32))  # a copy: shared constants become separate tensors
    if slot == 1 and kind == "CONV_2D":
        return t.permute(0, 3, 1, 2).contiguous()
    if slot == 1 and kind == "DEPTHWISE_CONV_2D":
        return t.permute(3, 0, 1, 2).contiguous()
    if slot == 1 and kind == "PRELU":
        return t.reshape(-1).contiguous() if t.dim() and t.shape[:-1].numel() == 1 else t
    return t


def _op_options(op, kind: str) -> dict[str, Any]:
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = _options(op, "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions")
        return {"padding": "same" if o.Padding() == 0 else "valid", "stride": [o.StrideH(), o.StrideW()],
                "dilation": [o.DilationHFactor(), o.DilationWFactor()],
                "activation": _activation(o.FusedActivationFunction())}
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = _options(op, "Pool2DOptions")
        return {"padding": "same" if o.Padding() == 0 else "valid", "stride": [o.StrideH(), o.StrideW()],
                "kernel": [o.FilterHeight(), o.FilterWidth()], "activation": _activation(o.FusedActivationFunction())}
    if kind in ("ADD", "SUB", "MUL", "DIV", "CONCATENATION"):
        cls = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions",
               "CONCATENATION": "ConcatenationOptions"}[kind]
        o = _options(op, cls)
        out = {"activation": _activation(o.FusedActivationFunction()) if o is not None else None}
        if kind == "CONCATENATION":
            out["axis"] = o.Axis()
        return out
    if kind in ("MEAN", "SUM"):
        o = _options(op, "ReducerOptions")
        return {"keep_dims": bool(o.KeepDims()) if o is not None else False}
    if kind == "RESHAPE":
        o = _options(op, "ReshapeOptions")
        return {"new_shape": o.NewShapeAsNumpy().tolist()} if o is not None and o.NewShapeLength() else {}
    if kind == "STRIDED_SLICE":
        o = _options(op, "StridedSliceOptions")
        if o.EllipsisMask() or o.NewAxisMask():
            raise WeightsError("STRIDED_SLICE with ellipsis or new-axis masks is not supported")
        return {"begin_mask": o.BeginMask(), "end_mask": o.EndMask(), "shrink_mask": o.ShrinkAxisMask()}
    if kind == "RESIZE_BILINEAR":
        o = _options(op, "ResizeBilinearOptions")
        return {"align_corners": bool(o.AlignCorners()), "half_pixel": bool(o.HalfPixelCenters())}
    if kind == "DEPTH_TO_SPACE":
        return {"block": _options(op, "DepthToSpaceOptions").BlockSize()}
    return {}


def _activation(code: int) -> str | None:
    if code not in _ACTIVATIONS:
        raise WeightsError(f"fused activation {code} is not supported")
    return _ACTIVATIONS[code]


__all__ = ["read_tflite", "SUPPORTED_OPS"]
