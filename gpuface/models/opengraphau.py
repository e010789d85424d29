"""OpenGraphAU (MEFARG, ResNet-50, stage 2): 41 facial action units from a 224² face, batched, inference only.

Source: Luo, Song, Xie, Shen, Gunes (2022), "Learning Multi-dimensional Edge Feature-based AU Relation Graph for
Facial Action Unit Recognition", IJCAI (arXiv:2205.01782); OpenGraphAU (github.com/lingjivoo/OpenGraphAU,
Apache-2.0), the model mexca 1.0.4 runs (HuggingFace ``mexca/mefarg-open-graph-au-resnet50-stage-2``), whose
parameter names :func:`convert_mexca_state` reads.

Architecture: a torchvision ResNet-50 without its classifier gives (N, 49, 2048) features of the 7×7 grid; a
linear block (Linear → BatchNorm → ReLU) maps them to 512; 27 per-AU linear blocks give node features
(N, 27, 49, 512) whose grid mean is each AU's node; a graph edge model (cross-attention of each node's features
with the global features, then between every ordered pair of nodes; projection, batch norm, grid mean) gives
multi-dimensional edge features (N, 27·27, 512); two gated graph-convolution layers (Bresson & Laurent 2018)
update nodes and edges; each output is the cosine similarity between a node and a learnt class vector
(ReLU-ed): 27 AUs, then the left/right versions of AU 1, 2, 4, 6, 10, 12, 14 (14 outputs). Outputs lie in
[0, 1]; OpenGraphAU calls an AU present at ≥ 0.5.

Unlike the upstream code, the 27 per-AU blocks run as one batched product, the pairwise edge attention is
averaged over the grid before the (linear) projection — the same numbers, 49× less memory — and the sub-AU loop
is one gather. Batch norms use their running statistics (eval mode).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The 41 outputs in order (OpenGraphAU's AU list: 27 main AUs, then left/right sub-AUs).
OPENGRAPHAU_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12", "AU13", "AU14",
                   "AU15", "AU16", "AU17", "AU18", "AU19", "AU20", "AU22", "AU23", "AU24", "AU25", "AU26", "AU27",
                   "AU32", "AU38", "AU39", "AUL01", "AUR01", "AUL02", "AUR02", "AUL04", "AUR04", "AUL06", "AUR06",
                   "AUL10", "AUR10", "AUL12", "AUR12", "AUL14", "AUR14")
_SUB_OF = (0, 1, 2, 4, 7, 8, 11)   # main node of each left/right pair


class _LinearBlock(nn.Module):
    """Linear → BatchNorm over the feature channel → ReLU, applied to (N, L, C) sequences."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.fc(x).transpose(1, 2)).transpose(1, 2))


class _Attention(nn.Module):
    """Query/key halves the width, value keeps it; scaled dot product (OpenGraphAU's cross-attention)."""

    def __init__(self, c: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(c, c // 2), nn.Linear(c, c // 2), nn.Linear(c, c)
        self.scale = (c // 2) ** -0.5


class _GatedGraphLayer(nn.Module):
    def __init__(self, c: int, n: int):
        super().__init__()
        self.u, self.v, self.a, self.b, self.e = (nn.Linear(c, c, bias=False) for _ in range(5))
        self.bnv, self.bne = nn.BatchNorm1d(n), nn.BatchNorm1d(n * n)

    def forward(self, x: torch.Tensor, edge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, n, C) nodes; edge (N, n·n, C), row i·n + j for the pair (i, j)."""
        b, n, c = x.shape
        gate = (self.a(x)[:, :, None] + self.b(x)[:, None, :]).reshape(b, n * n, c)
        edge = edge + F.relu(self.bne(gate + self.e(edge)))
        weight = torch.sigmoid(edge).view(b, n, n, c).softmax(dim=2)
        message = (weight * self.v(x)[:, None, :]).sum(2) / n
        return x + F.relu(self.bnv(self.u(x) + message)), edge


class OpenGraphAU(nn.Module):
    """MEFARG stage 2: (N, 3, 224, 224) ImageNet-normalised RGB faces → (N, 41) AU scores in [0, 1]
    (:data:`OPENGRAPHAU_AUS`). See the module docstring."""

    def __init__(self, n_main: int = 27, n_sub: int = 14, width: int = 512):
        super().__init__()
        from torchvision.models import resnet50

        self.backbone = resnet50()
        self.backbone.fc = nn.Identity()
        self.global_block = _LinearBlock(2048, width)
        self.node_weight = nn.Parameter(torch.zeros(n_main, width, width))   # (node, out, in)
        self.node_bias = nn.Parameter(torch.zeros(n_main, width))
        for name in ("node_bn_weight", "node_bn_bias", "node_bn_mean", "node_bn_var"):
            self.register_buffer(name, torch.zeros(n_main, width))
        self.fam, self.arm = _Attention(width), _Attention(width)
        self.edge_proj = nn.Linear(width, width)
        self.edge_bn = nn.BatchNorm1d(n_main * n_main)
        self.gnn = nn.ModuleList([_GatedGraphLayer(width, n_main) for _ in range(2)])
        self.main_sc = nn.Parameter(torch.zeros(n_main, width))
        self.sub_sc = nn.Parameter(torch.zeros(n_sub, width))

    def _grid_features(self, x: torch.Tensor) -> torch.Tensor:
        r = self.backbone
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
        return x.flatten(2).transpose(1, 2)                                   # (N, 49, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.global_block(self._grid_features(x))                        # (N, d, C)
        # the 27 per-AU linear blocks at once (batch norm with running statistics)
        u = torch.einsum("bdc,noc->bndo", g, self.node_weight) + self.node_bias[:, None]
        u = (u - self.node_bn_mean[:, None]) * torch.rsqrt(self.node_bn_var[:, None] + 1e-5)
        u = F.relu(u * self.node_bn_weight[:, None] + self.node_bn_bias[:, None])   # (N, n, d, C)
        nodes = u.mean(2)
        # facial-display attention of each node's features over the global features
        a = self.fam
        attn = torch.softmax(torch.einsum("bndh,bkh->bndk", a.q(u), a.k(g)) * a.scale, -1)
        feat = torch.einsum("bndk,bkc->bndc", attn, a.v(g))
        # pair (i, j): queries from node j, keys/values from node i; the grid mean taken before the projection
        a = self.arm
        attn = torch.softmax(torch.einsum("bjxh,biyh->bijxy", a.q(feat), a.k(feat)) * a.scale, -1)
        pair = torch.einsum("bijy,biyc->bijc", attn.mean(3), a.v(feat))
        b, n = pair.shape[:2]
        edge = self.edge_bn(self.edge_proj(pair.reshape(b, n * n, -1)))
        for layer in self.gnn:
            nodes, edge = layer(nodes, edge)
        main = (F.normalize(nodes, dim=-1) * F.normalize(F.relu(self.main_sc), dim=-1)).sum(-1)
        sub_nodes = F.normalize(nodes[:, [i for i in _SUB_OF for _ in (0, 1)]], dim=-1)
        sub = (sub_nodes * F.normalize(F.relu(self.sub_sc), dim=-1)).sum(-1)
        return torch.cat([main, sub], dim=1)


def convert_mexca_state(state: dict[str, torch.Tensor], n_main: int = 27) -> dict[str, torch.Tensor]:
    """mexca's MEFARG parameter names (``backbone.*``, ``linear_global.*``, ``head.main_node_linear_layers.K.*``,
    ``head.edge_extractor.{fam,arm}.linear_{q,k,v}``, ``head.edge_extractor.{edge_proj,bn}``,
    ``head.gnn.graph_layers.L.{linear_u..e,bnv,bne}``, ``head.{main,sub}_sc``) → :class:`OpenGraphAU`'s.

    Raises:
        KeyError: a parameter is missing (another model).
    """
    out: dict[str, torch.Tensor] = {}
    nodes = "head.main_node_linear_layers"
    stacks = {"node_weight": "fc.weight", "node_bias": "fc.bias", "node_bn_weight": "bn.weight",
              "node_bn_bias": "bn.bias", "node_bn_mean": "bn.running_mean", "node_bn_var": "bn.running_var"}
    for ours, theirs in stacks.items():
        out[ours] = torch.stack([state[f"{nodes}.{k}.{theirs}"] for k in range(n_main)]).float()
    renames = (("linear_global.", "global_block."), ("head.edge_extractor.fam.linear_", "fam."),
               ("head.edge_extractor.arm.linear_", "arm."), ("head.edge_extractor.edge_proj.", "edge_proj."),
               ("head.edge_extractor.bn.", "edge_bn."), ("head.main_sc", "main_sc"), ("head.sub_sc", "sub_sc"),
               ("backbone.", "backbone."))
    for key, value in state.items():
        if key.startswith(nodes) or key.startswith("backbone.fc."):
            continue
        if key.startswith("head.gnn.graph_layers."):
            layer, rest = key[len("head.gnn.graph_layers."):].split(".", 1)
            out[f"gnn.{layer}.{rest.replace('linear_', '')}"] = value
            continue
        for old, new in renames:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


__all__ = ["OpenGraphAU", "OPENGRAPHAU_AUS", "convert_mexca_state"]
