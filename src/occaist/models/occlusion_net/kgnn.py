"""Keypoint graph networks of Occlusion-Net (Reddy et al., CVPR 2019), pure torch.

* :func:`heatmaps_to_graph`: 56x56 keypoint logits per ROI -> graph nodes
  ``V_i = (x_i, y_i, c_i, t_i)`` (paper §3.1; upstream dropped the type ``t``, switch
  ``use_type``).
* :class:`GraphEncoder` (2D-KGNN encoder): node-to-edge / edge-to-node message passing (NRI form)
  giving visible/occluded edge logits, ``e_ij = 1`` iff both ends are visible.
* :class:`GraphDecoder` (2D-KGNN decoder): messages per edge type weighted by the soft edge
  probabilities, residual update ``V' = V + dV``; dropout as ``nn.Dropout`` (off in eval mode;
  upstream's stays on at inference).
* :class:`GraphEncoder3D` (3D-KGNN): the same message passing over the 182 edges, edge-to-node,
  flatten, linear to shape coefficients ``beta`` and a weak-perspective camera ``(s, t, q)``;
  ``W = b_0 + sum_k beta_k sigma_k b_k`` projected into the ROI frame.
* :class:`KeypointGraphNet`: the three chained, as the graph head of the detector or alone.

ROI frame: a point ``(x, y)`` in image pixels inside the box ``(x0, y0, x1, y1)`` has
coordinates ``(2 (x - x0) / w - 1, 2 (y - y0) / h - 1)``; heatmap cell ``c`` of ``R`` maps to its
centre ``2 (c + 0.5) / R - 1`` (upstream used the cell corner, a half-cell offset against its
continuous targets). Each axis is normalised by its own side, so the 3D projection scales ``y``
by the ROI aspect ratio ``w / h``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from occaist.geometry.quaternion import quaternion_rotate

__all__ = [
    "MLP",
    "GraphDecoder",
    "GraphEncoder",
    "GraphEncoder3D",
    "KeypointGraphNet",
    "edge_labels",
    "fully_connected_edges",
    "heatmaps_to_graph",
    "image_to_roi",
    "load_graph_head",
    "node_visibility",
    "roi_to_image",
]

#: Node coordinate channels (x, y, confidence) that the decoder updates.
COORD_DIMS = 3
#: How the 3D-KGNN gets its camera: regressed (paper, upstream) or fitted (ours).
CAMERA_MODES = ("regressed", "fitted")
#: What the 3D-KGNN reads: the 2D-KGNN output (paper), the heatmap graph (upstream), or the
#: 2D-KGNN output with the gradient stopped (ours).
INPUTS_3D = ("refined", "heatmap", "refined_detached")


def fully_connected_edges(num_nodes: int) -> tuple[Tensor, Tensor]:
    """Directed edges ``i -> j`` (``i != j``) in row-major order: ``(send, receive)`` indices,
    each ``(K (K - 1),)``; 182 edges for 14 keypoints."""
    off_diag = ~torch.eye(num_nodes, dtype=torch.bool)
    send, receive = off_diag.nonzero(as_tuple=True)
    return send, receive


def image_to_roi(points: Tensor, boxes: Tensor) -> Tensor:
    """Pixels ``(N, K, 2)`` -> ROI frame of boxes ``(N, 4)`` (xyxy), see the module docstring."""
    x0y0, size = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2]).clamp_min(1e-6)
    return 2.0 * (points - x0y0) / size - 1.0


def roi_to_image(points: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of :func:`image_to_roi`: ROI frame ``(N, K, 2)`` -> pixels."""
    x0y0, size = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
    return x0y0 + (points + 1.0) * 0.5 * size


def heatmaps_to_graph(logits: Tensor, use_type: bool = True) -> Tensor:
    """Graph nodes from keypoint heatmap logits.

    Args:
        logits: ``(N, K, R, R)`` keypoint logits of ``N`` ROIs (``R = 56`` in Keypoint R-CNN).
        use_type: append the keypoint-type one-hot ``t_i`` (paper); upstream used ``(x, y, c)``.

    Returns:
        ``V``: ``(N, K, 3 [+ K])`` with ``(x, y)`` the argmax cell centre in the ROI frame and
        ``c`` the softmax peak over the ``R * R`` cells (upstream used the raw logit). The argmax
        carries no gradient; ``c`` does.
    """
    n, k, h, w = logits.shape
    flat = logits.flatten(2)  # (N, K, R*R)
    peak = flat.softmax(dim=-1).amax(dim=-1)  # (N, K)
    idx = flat.argmax(dim=-1)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    x = 2.0 * (col.to(logits.dtype) + 0.5) / w - 1.0
    y = 2.0 * (row.to(logits.dtype) + 0.5) / h - 1.0
    nodes = torch.stack([x, y, peak], dim=-1)
    if use_type:
        types = torch.eye(k, dtype=logits.dtype, device=logits.device).expand(n, k, k)
        nodes = torch.cat([nodes, types], dim=-1)
    return nodes


def edge_labels(visible: Tensor, send: Tensor, receive: Tensor) -> Tensor:
    """Edge targets ``e_ij = 1`` iff both ``i`` and ``j`` are visible: ``(N, K)`` -> ``(N, E)``."""
    return (visible[:, send] & visible[:, receive]).long()


def node_visibility(edge_logits: Tensor, send: Tensor, num_nodes: int) -> Tensor:
    """Soft node visibility from edge logits ``(N, E, 2)``: ``(N, K)`` in [0, 1].

    Node ``a`` is visible iff any outgoing edge ``a -> j`` is of the visible class (upstream's
    ``edges_to_vis``); the soft form is the maximum visible-edge probability, so
    ``> 0.5`` reproduces the hard rule.
    """
    prob = edge_logits.softmax(dim=-1)[..., 1]  # (N, E)
    out = prob.new_zeros(prob.shape[0], num_nodes)
    index = send.expand_as(prob)
    return out.scatter_reduce(1, index, prob, reduce="amax", include_self=False)


class MLP(nn.Module):
    """Two-layer ELU MLP with dropout and batch norm over all items (Occlusion-Net / NRI block):
    ``fc1 -> ELU -> Dropout -> fc2 -> ELU -> BatchNorm1d``; input ``(N, items, a)``."""

    def __init__(self, n_in: int, n_hid: int, n_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hid)
        self.fc2 = nn.Linear(n_hid, n_out)
        self.dropout = nn.Dropout(dropout)
        self.bn = nn.BatchNorm1d(n_out)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_normal_(layer.weight)
            nn.init.constant_(layer.bias, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from_fc1(self.fc1(x))

    def forward_from_fc1(self, x: Tensor) -> Tensor:
        """The block after ``fc1`` (for callers that compute ``fc1`` more cheaply)."""
        x = F.elu(x)
        x = F.elu(self.fc2(self.dropout(x)))
        n, items, c = x.shape
        if n * items > 1 or not self.training:
            x = self.bn(x.reshape(n * items, c)).reshape(n, items, c)
        return x


class _Graph(nn.Module):
    """Fully connected directed graph on ``num_nodes`` nodes, with index buffers."""

    def __init__(self, num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        send, receive = fully_connected_edges(num_nodes)
        self.register_buffer("send", send, persistent=False)
        self.register_buffer("receive", receive, persistent=False)

    def node2edge(self, x: Tensor) -> Tensor:
        """``(N, K, C)`` -> ``(N, E, 2C)`` as ``[receiver, sender]``."""
        return torch.cat([x[:, self.receive], x[:, self.send]], dim=-1)

    def sum_incoming(self, e: Tensor) -> Tensor:
        """Sum over each node's incoming edges: ``(N, E, C)`` -> ``(N, K, C)``."""
        out = e.new_zeros(e.shape[0], self.num_nodes, e.shape[-1])
        return out.index_add(1, self.receive, e)

    def edge2node(self, e: Tensor) -> Tensor:
        """Incoming-edge sum divided by ``K`` (upstream's normalisation, not ``K - 1``)."""
        return self.sum_incoming(e) / self.num_nodes


class _EdgeStack(_Graph):
    """The encoder's MLP stack shared by the 2D- and 3D-KGNN (upstream's ``GraphEncoder`` body).

    ``h1 = f_enc(v)``, ``h1_ij = f_e1([h1_i, h1_j])`` (node-to-edge message); the factor-graph
    variant (NRI default) adds ``h2_j = f_v(sum_i h1_ij)`` (edge-to-node) and
    ``h2_ij = f_e2([h2_i, h2_j])``; the shipped upstream variant (``factor=False``) applies
    ``f_e2`` to the edge features directly. Both end with a skip concatenation:
    :meth:`edge_features` maps nodes ``(N, K, n_in)`` to edge features ``(N, K (K - 1), H)``.
    """

    def __init__(
        self, num_nodes: int, n_in: int, n_hid: int, dropout: float, factor: bool
    ) -> None:
        super().__init__(num_nodes)
        self.factor = factor
        self.mlp1 = MLP(n_in, n_hid, n_hid, dropout)
        self.mlp2 = MLP(2 * n_hid, n_hid, n_hid, dropout)
        self.mlp3 = MLP(n_hid, n_hid, n_hid, dropout)
        self.mlp4 = MLP((3 if factor else 2) * n_hid, n_hid, n_hid, dropout)

    def edge_features(self, nodes: Tensor) -> Tensor:
        h = self.mlp1(nodes)  # (N, K, H)
        e = self.mlp2.forward_from_fc1(self._edge_fc1(h))  # = mlp2(node2edge(h)), (N, E, H)
        skip = e
        if self.factor:
            e = self.node2edge(self.mlp3(self.edge2node(e)))  # (N, E, 2H)
        else:
            e = self.mlp3(e)
        return self.mlp4(torch.cat([e, skip], dim=-1))

    def _edge_fc1(self, h: Tensor) -> Tensor:
        """``mlp2.fc1(node2edge(h))`` without forming the ``(N, E, 2H)`` edge input: the linear
        layer splits into receiver and sender halves applied per node, then gathered (exact;
        ``K - 1`` times fewer multiplications in the encoder's widest layer)."""
        weight, n_h = self.mlp2.fc1.weight, h.shape[-1]
        recv = F.linear(h, weight[:, :n_h])[:, self.receive]
        send = F.linear(h, weight[:, n_h:])[:, self.send]
        return recv + send + self.mlp2.fc1.bias


class GraphEncoder(_EdgeStack):
    """2D-KGNN encoder: visible/occluded edge logits from the keypoint graph (paper eq. 3-6):
    :meth:`_EdgeStack.edge_features` followed by a linear edge classifier.

    Input ``(N, K, n_in)``, output logits ``(N, K (K - 1), edge_types)``.
    """

    def __init__(
        self,
        num_nodes: int = 14,
        n_in: int = 17,
        n_hid: int = 512,
        edge_types: int = 2,
        dropout: float = 0.5,
        factor: bool = False,
    ) -> None:
        super().__init__(num_nodes, n_in, n_hid, dropout, factor)
        self.fc_out = nn.Linear(n_hid, edge_types)
        nn.init.xavier_normal_(self.fc_out.weight)
        nn.init.constant_(self.fc_out.bias, 0.1)

    def forward(self, nodes: Tensor) -> Tensor:
        return self.fc_out(self.edge_features(nodes))


class GraphDecoder(_Graph):
    """2D-KGNN decoder: ``mu_j = v_j + f_v(sum_{i != j} sum_p q_ij,p f_e^p([v_i, v_j]))``.

    ``q = softmax(edge logits)`` (soft, no sampling). The update ``dV`` is added to the first
    three channels ``(x, y, c)``; the type one-hot is carried unchanged. Dropout is an
    ``nn.Dropout`` module, so eval mode is deterministic (upstream's decoder dropout stayed on at
    inference).

    Input nodes ``(N, K, n_in)``, edge logits ``(N, E, edge_types)``; output ``(N, K, n_in)``.
    """

    def __init__(
        self,
        num_nodes: int = 14,
        n_in: int = 17,
        edge_types: int = 2,
        n_hid: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_nodes)
        self.msg_fc1 = nn.ModuleList(nn.Linear(2 * n_in, n_hid) for _ in range(edge_types))
        self.msg_fc2 = nn.ModuleList(nn.Linear(n_hid, n_hid) for _ in range(edge_types))
        self.out_fc1 = nn.Linear(n_in + n_hid, n_hid)
        self.out_fc2 = nn.Linear(n_hid, n_hid)
        self.out_fc3 = nn.Linear(n_hid, COORD_DIMS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, nodes: Tensor, edge_logits: Tensor) -> Tensor:
        pre = self.node2edge(nodes)  # (N, E, 2D)
        q = edge_logits.softmax(dim=-1)  # (N, E, P)
        messages = 0.0
        for p, (fc1, fc2) in enumerate(zip(self.msg_fc1, self.msg_fc2, strict=True)):
            m = F.relu(fc2(self.dropout(F.relu(fc1(pre)))))
            messages = messages + m * q[..., p : p + 1]
        agg = self.sum_incoming(messages)  # (N, K, H)
        h = self.dropout(F.relu(self.out_fc1(torch.cat([nodes, agg], dim=-1))))
        h = self.dropout(F.relu(self.out_fc2(h)))
        delta = self.out_fc3(h)  # (N, K, 3)
        return torch.cat([nodes[..., :COORD_DIMS] + delta, nodes[..., COORD_DIMS:]], dim=-1)


class GraphEncoder3D(_EdgeStack):
    """3D-KGNN: shape coefficients and weak-perspective camera from the graph (paper §3.3).

    A graph net as upstream's ``GraphEncoder3D``: the encoder's message-passing stack
    (:class:`_EdgeStack`: node-to-edge messages over the ``K (K - 1)`` directed edges, the MLPs,
    the skip), then edge-to-node aggregation (incoming-edge sum / ``K``), the ``(K, H)`` node
    features flattened and one linear layer to the parameters
    ``(beta (B,), s, t (2,), q (4,))``. ``W = b_0 + sum_k beta_k sigma_k b_k`` (``(K, 3)``,
    paper; upstream used the mean shape only, i.e. ``num_basis=0``); projection
    ``p = s R(q) W [:, :2] + t`` with ``s = softplus(.)`` positive and ``q`` normalised (both
    unconstrained upstream), then ``p_y *= w / h`` into the anisotropic ROI frame.

    ``camera="fitted"`` (ours): the last layer gives one weight ``w_k`` in (0, 1) per node
    instead of the camera and ``beta``; the shape and camera are then fitted to ``points`` in
    closed form, differentiably: ``fit_rounds`` rounds of Cauchy reweighting (scale
    ``fit_cauchy`` in the isotropic ROI frame, whose side spans 2; the factor is not
    differentiated), each of ``fit_iterations`` alternations of :func:`fit_camera` and
    :func:`fit_beta`, whose ridge pulls ``beta`` towards 0. This is
    ``occaist.geometry.shape_fit``'s robust least-squares baseline with learned weights
    ``w_k = sigmoid(logit(c_k) + o_k)``, ``c_k`` the node's confidence and ``o_k`` the network's
    output, so the untrained head (``o`` near 0) *is* the confidence-weighted baseline and
    training learns corrections to it, bounded by ``weight_offset_max`` when given
    (``o = m tanh(o' / m)``). (An earlier form also learned the ridge's ``beta``
    prior: on the demo world it drifted to 5 standard deviations and cost 16 PCK points on
    occluded keypoints.)

    Deviation (conditioning only): the output layer starts with weights 100x smaller than
    Xavier and a bias at the identity camera (``s = 1``, ``q = (1, 0, 0, 0)``, ``beta = 0``), so
    the first projection is the mean shape filling the ROI rather than a random camera.

    Args:
        mean: ``(K, 3)`` mean shape ``b_0``.
        basis: ``(B, K, 3)`` principal components ``b_k``.
        sigma: ``(B,)`` their standard deviations ``sigma_k``.
        n_in, n_hid, dropout, factor: as :class:`GraphEncoder` (upstream: width 512, dropout
            0.5, ``factor=False``; about 2.46 M parameters at width 512 with ``n_in = 3``).
    """

    def __init__(
        self,
        mean: Tensor,
        basis: Tensor,
        sigma: Tensor,
        n_in: int,
        n_hid: int,
        dropout: float,
        factor: bool = False,
        camera: str = "regressed",
        fit_iterations: int = 10,
        fit_rounds: int = 8,
        fit_cauchy: float = 0.06,
        weight_offset_max: float | None = None,
    ) -> None:
        super().__init__(mean.shape[0], n_in, n_hid, dropout, factor)
        self.weight_offset_max = weight_offset_max
        self.fit_iterations = fit_iterations
        self.fit_rounds = fit_rounds
        self.fit_cauchy = fit_cauchy
        if camera not in CAMERA_MODES:
            raise ValueError(f"camera must be one of {CAMERA_MODES}, got {camera!r}")
        self.camera = camera
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", basis.float())
        self.register_buffer("sigma", sigma.float())
        self.num_basis = basis.shape[0]
        # regressed: (beta, s, t, q); fitted: one weight offset per node (beta is fitted)
        self.beta_outputs = self.num_basis if camera == "regressed" else 0
        extra = 1 + 2 + 4 if camera == "regressed" else self.num_nodes
        self.fc_out = nn.Linear(self.num_nodes * n_hid, self.beta_outputs + extra)
        nn.init.xavier_normal_(self.fc_out.weight, gain=0.01)
        with torch.no_grad():  # start at the identity rotation, unit scale, no shape offset
            self.fc_out.bias.zero_()
            if camera == "regressed":
                self.fc_out.bias[self.num_basis] = math.log(math.e - 1.0)  # softplus -> 1
                self.fc_out.bias[self.num_basis + 3] = 1.0

    def camera_and_shape(self, nodes: Tensor) -> Tensor:
        """Parameters ``(N, B + 7)``: message passing over the 182 edges, edge2node, flatten,
        linear (upstream's 3D head)."""
        node_features = self.edge2node(self.edge_features(nodes))  # (N, K, H)
        return self.fc_out(node_features.flatten(1))

    def forward(
        self,
        nodes: Tensor,
        aspect: Tensor,
        points: Tensor | None = None,
        confidence: Tensor | None = None,
        learned_weights: bool = True,
    ) -> dict[str, Tensor]:
        """``nodes`` ``(N, K, D)``, ``aspect`` ``(N,)`` ROI ``w / h`` -> dict of ``beta``,
        ``scale`` ``(N,)``, ``translation`` ``(N, 2)``, ``shape`` ``(N, K, 3)``, ``projection``
        ``(N, K, 2)`` in the ROI frame, and ``quaternion`` ``(N, 4)`` (``regressed``) or
        ``rotation`` ``(N, 2, 3)`` and ``weights`` ``(N, K)`` (``fitted``: the camera fitted to
        ``points`` ``(N, K, 2)``, ROI frame, default ``nodes[..., :2]``, starting from the
        weights ``confidence`` ``(N, K)``, default ``nodes[..., 2]``; ``learned_weights=False``
        leaves the offsets out: the untrained head, i.e. the confidence-weighted fit alone)."""
        if learned_weights or self.camera != "fitted":
            params = self.camera_and_shape(nodes)  # (N, P)
        else:  # the offsets are left out: no need to run the graph net
            params = nodes.new_zeros(len(nodes), self.fc_out.out_features)
        beta = params[:, : self.beta_outputs]
        if self.camera == "fitted":  # the baseline's ridge prior: beta = 0
            beta = params.new_zeros(len(params), self.num_basis)
        offsets = torch.einsum("nb,b,bkc->nkc", beta, self.sigma, self.basis)
        shape = self.mean[None] + offsets  # (N, K, 3)
        out = {"beta": beta, "shape": shape}
        if self.camera == "regressed":
            scale = F.softplus(params[:, self.num_basis])
            translation = params[:, self.num_basis + 1 : self.num_basis + 3]
            quat = F.normalize(params[:, self.num_basis + 3 :], dim=-1)
            rotated = quaternion_rotate(shape, quat)[..., :2]  # q (w, x, y, z): q (0, p) q*
            out["quaternion"] = quat
        else:
            conf = nodes[..., 2] if confidence is None else confidence
            offsets = params[:, self.beta_outputs :]
            if learned_weights and self.weight_offset_max is not None:  # |o| < max
                offsets = self.weight_offset_max * torch.tanh(offsets / self.weight_offset_max)
            weights = torch.sigmoid(torch.logit(conf.clamp(1e-4, 1 - 1e-4)) + offsets)
            target = _isotropic(nodes[..., :2] if points is None else points, aspect)
            scale, rotation, translation, shape, fitted_beta = self.robust_fit(
                beta, target, weights
            )
            rotated = torch.einsum("nij,nkj->nki", rotation, shape)
            out.update(beta=fitted_beta, shape=shape, rotation=rotation, weights=weights)
        proj = _anisotropic(scale[:, None, None] * rotated + translation[:, None, :], aspect)
        out.update(scale=scale, translation=translation, projection=proj)
        return out

    def _fit(
        self, prior: Tensor, target: Tensor, w: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``fit_iterations`` alternations of :func:`fit_camera` and :func:`fit_beta` from
        ``beta = prior`` under weights ``w`` -> ``(s, R, t, shape, beta)``."""
        components = self.basis * self.sigma[:, None, None]
        beta = prior
        shape = self.mean[None] + torch.einsum("nb,bkc->nkc", prior, components)
        for _ in range(self.fit_iterations if self.num_basis else 0):
            scale, rotation, translation = fit_camera(shape, target, w)
            beta = fit_beta(prior, self.mean, components, scale, rotation, translation, target, w)
            shape = self.mean[None] + torch.einsum("nb,bkc->nkc", beta, components)
        scale, rotation, translation = fit_camera(shape, target, w)
        return scale, rotation, translation, shape, beta

    def robust_fit(
        self, prior: Tensor, target: Tensor, weights: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The weighted, Cauchy-reweighted alternation of :func:`fit_camera` and
        :func:`fit_beta` (class docstring) to ``target`` ``(N, K, 2)`` in isotropic units ->
        ``(s, R, t, shape, beta)``."""
        w, rounds = weights, max(self.fit_rounds, 1)
        for round_ in range(rounds):
            last = round_ == rounds - 1
            # the reweighting rounds only set the (not differentiated) Cauchy factors
            with torch.set_grad_enabled(last and torch.is_grad_enabled()):
                scale, rotation, translation, shape, beta = self._fit(prior, target, w)
            if not last:
                proj = scale[:, None, None] * torch.einsum("nij,nkj->nki", rotation, shape)
                residual = (proj + translation[:, None] - target).norm(dim=-1)
                w = weights / (1 + (residual / self.fit_cauchy) ** 2)
        return scale, rotation, translation, shape, beta


def _isotropic(points: Tensor, aspect: Tensor) -> Tensor:
    """ROI-frame points ``(N, K, 2)`` -> isotropic units (y by ``h / w``), where a
    weak-perspective camera is a scaled rotation."""
    return torch.stack([points[..., 0], points[..., 1] / aspect[:, None]], dim=-1)


def _anisotropic(points: Tensor, aspect: Tensor) -> Tensor:
    """The inverse of :func:`_isotropic`."""
    return torch.stack([points[..., 0], points[..., 1] * aspect[:, None]], dim=-1)


def fit_beta(
    prior: Tensor,
    mean: Tensor,
    components: Tensor,
    scale: Tensor,
    rotation: Tensor,
    translation: Tensor,
    points: Tensor,
    weights: Tensor,
    ridge: float = 1e-2,
) -> Tensor:
    """Shape coefficients ``(N, B)`` given the camera, in closed form (differentiable):
    ``argmin_beta sum_k w_k ||s R (b_0 + sum_j beta_j c_j)_k + t - p_k||^2
    + lambda ||beta - prior||^2``, ``c_j = sigma_j b_j`` ``(B, K, 3)``, ``lambda`` = ``ridge``
    times the mean diagonal of the normal equations (as ``occaist.geometry.shape_fit``)."""
    n, b = prior.shape
    resid = (
        points
        - translation[:, None]
        - scale[:, None, None] * torch.einsum("nij,kj->nki", rotation, mean)
    )  # (N, K, 2)
    design = scale[:, None, None, None] * torch.einsum("nij,bkj->nkib", rotation, components)
    a = design.reshape(n, -1, b)  # (N, 2K, B)
    w = weights.repeat_interleave(2, dim=1)[..., None]  # (N, 2K, 1)
    ata = a.transpose(1, 2) @ (w * a)
    atr = a.transpose(1, 2) @ (w * resid.reshape(n, -1, 1))
    lam = ridge * ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-8)[:, None, None]
    eye = torch.eye(b, dtype=ata.dtype, device=ata.device)
    return torch.linalg.solve(ata + lam * eye, atr + lam * prior[..., None])[..., 0]


def fit_camera(
    shape: Tensor, points: Tensor, weights: Tensor, eps: float = 1e-6
) -> tuple[Tensor, Tensor, Tensor]:
    """Differentiable weighted weak-perspective camera of shapes ``(N, K, 3)`` to points
    ``(N, K, 2)`` with weights ``(N, K)`` (``occaist.geometry.shape_fit``'s camera step in
    torch): the weighted affine least-squares fit ``A`` (2 x 3), then its nearest scaled
    rotation ``s R`` by the polar decomposition ``R = (A A^T)^{-1/2} A``, ``s`` the mean singular
    value (the 2 x 2 square root in closed form, so the gradient stays finite when the two
    singular values are equal, which an SVD's does not). Returns ``(s (N,), R (N, 2, 3),
    t (N, 2))`` with ``p ~ s R X + t``."""
    w = weights[..., None]
    wsum = w.sum(1, keepdim=True).clamp_min(1e-8)
    s_mean = (w * shape).sum(1, keepdim=True) / wsum
    p_mean = (w * points).sum(1, keepdim=True) / wsum
    sc, pc = shape - s_mean, points - p_mean
    sws = sc.transpose(1, 2) @ (w * sc)  # (N, 3, 3)
    damp = eps * sws.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-8)
    sws = sws + damp[:, None, None] * torch.eye(3, dtype=sws.dtype, device=sws.device)
    pws = pc.transpose(1, 2) @ (w * sc)  # (N, 2, 3)
    affine = torch.linalg.solve(sws, pws.transpose(1, 2)).transpose(1, 2)  # sws symmetric
    gram = affine @ affine.transpose(1, 2)  # (N, 2, 2)
    # the 2 x 2 determinant in closed form: torch.linalg.det's backward returns NaN when
    # ``gram`` is singular (weights on too few nodes), seen at one step of a 1200-step run
    det = gram[:, 0, 0] * gram[:, 1, 1] - gram[:, 0, 1] * gram[:, 1, 0]
    root_det = det.clamp_min(1e-12).sqrt()
    trace = gram.diagonal(dim1=1, dim2=2).sum(-1)
    eye = torch.eye(2, dtype=gram.dtype, device=gram.device)
    root = (gram + root_det[:, None, None] * eye) / (trace + 2 * root_det).sqrt()[:, None, None]
    rotation = torch.linalg.solve(root, affine)
    scale = root.diagonal(dim1=1, dim2=2).sum(-1) / 2
    translation = p_mean[:, 0] - scale[:, None] * torch.einsum(
        "nij,nj->ni", rotation, s_mean[:, 0]
    )
    return scale, rotation, translation


def load_shape_basis(path: str | Path) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean (K, 3), basis (B, K, 3), sigma (B,))`` from a shape-basis ``.npz``."""
    from occaist.geometry.shape_basis import ShapeBasis

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"shape basis {path} not found: the synthetic world writes it at "
            "<world>/shapenet_renders/synthetic/shape_basis.npz (python -m occaist.synth); "
            "any .npz with mean (K,3), basis (B,K,3), sigma (B,) works, or set use_3d=false"
        )
    sb = ShapeBasis.load(path)
    return (
        torch.as_tensor(sb.mean, dtype=torch.float32),
        torch.as_tensor(sb.basis, dtype=torch.float32),
        torch.as_tensor(sb.sigma, dtype=torch.float32),
    )


class KeypointGraphNet(nn.Module):
    """The Occlusion-Net graph head: heatmaps -> graph -> 2D-KGNN -> 3D-KGNN.

    Args:
        num_keypoints: ``K`` (14 for CarFusion).
        use_type: keypoint-type one-hot in the node features (paper; upstream: off).
        encoder_hidden, decoder_hidden, hidden_3d: hidden widths (upstream 512).
        encoder_dropout, decoder_dropout: dropout probabilities (upstream 0.5).
        dropout_3d: dropout of the 3D-KGNN's MLP stack (upstream shares the encoder's 0.5).
        factor: factor-graph encoder (NRI default; upstream shipped ``False``).
        use_3d: run the 3D-KGNN (needs ``shape_basis``).
        shape_basis: path of a shape-basis ``.npz`` (``mean``, ``basis``, ``sigma``).
        num_basis: keep the first ``B`` components (``None``: all; 0: mean shape only, upstream).
        input_3d: ``"refined"`` feeds the 2D-KGNN output ``V'`` to the 3D-KGNN (paper),
            ``"heatmap"`` the raw graph ``V`` (upstream), ``"refined_detached"`` (ours) ``V'``
            as ``"refined"`` but with the gradient stopped, so the 3D-KGNN's loss trains only
            the 3D-KGNN (with ``"refined"`` on the demo world it pulled the 2D-KGNN from 70 to
            47 PCK on occluded keypoints; docs/occlusion_net.md).
        replace: ``"occluded"`` outputs heatmap keypoints for predicted-visible nodes and ``V'``
            for predicted-occluded ones; ``"all"`` outputs ``V'`` everywhere (upstream).
        visibility_threshold: node visibility probability above which a node is visible.
        decoder_edges: the type weights ``q_ij`` of the decoder's messages: ``"edge"`` (paper)
            the encoder's edge probabilities (``e_ij = 1`` iff both ends visible, so every
            message into an occluded node has type 0, whatever its sender); ``"sender"`` (ours)
            the sender's soft node visibility ``(1 - vis_i, vis_i)``, so an occluded node tells
            messages from visible nodes from those of occluded ones.
        fit_iterations, fit_rounds, fit_cauchy: the ``fitted`` camera's alternations per
            round, Cauchy reweighting rounds and Cauchy scale (ROI-frame units; the side spans
            2, so 0.06 is ``occaist.geometry.shape_fit``'s 3 % of the side).
        weight_offset_max: bound of the ``fitted`` camera's learned logit offsets to the
            confidence weights (``None``: unbounded).
        fit_prior: (ours) two more node channels for both KGNNs: each node's offset to the
            robust least-squares fit of the shape basis to the input graph (the fitted
            camera's closed form under the confidences, no learning, not differentiated), so
            the decoder can move an occluded node towards the shape prior when its heatmap is
            off and the encoder can see which nodes disagree with the rest.
        camera_3d: ``"regressed"`` (paper, upstream): the 3D-KGNN's last layer gives the camera
            ``(s, t, q)``; ``"fitted"`` (ours): it gives one weight offset per node, and the
            weak-perspective camera and ``beta`` are fitted in closed form (:func:`fit_camera`,
            :func:`fit_beta`) to the 2D-KGNN's keypoints (``keypoints_2d``; the heatmap points with
            ``input_3d="heatmap"``) under those weights.
    """

    def __init__(
        self,
        num_keypoints: int = 14,
        use_type: bool = True,
        encoder_hidden: int = 512,
        decoder_hidden: int = 512,
        hidden_3d: int = 512,
        encoder_dropout: float = 0.5,
        decoder_dropout: float = 0.5,
        dropout_3d: float = 0.0,
        factor: bool = False,
        use_3d: bool = True,
        shape_basis: str | None = None,
        num_basis: int | None = None,
        input_3d: str = "refined",
        replace: str = "occluded",
        visibility_threshold: float = 0.5,
        camera_3d: str = "regressed",
        decoder_edges: str = "edge",
        fit_iterations: int = 10,
        fit_rounds: int = 8,
        fit_cauchy: float = 0.06,
        weight_offset_max: float | None = None,
        fit_prior: bool = False,
    ) -> None:
        super().__init__()
        if fit_prior and not use_3d:
            raise ValueError("fit_prior=true needs the shape basis of the 3D-KGNN (use_3d=true)")
        if input_3d not in INPUTS_3D:
            raise ValueError(f"input_3d must be one of {INPUTS_3D}, got {input_3d!r}")
        if replace not in ("occluded", "all"):
            raise ValueError(f"replace must be 'occluded' or 'all', got {replace!r}")
        if decoder_edges not in ("edge", "sender"):
            raise ValueError(f"decoder_edges must be 'edge' or 'sender', got {decoder_edges!r}")
        self.decoder_edges = decoder_edges
        self.num_keypoints = num_keypoints
        self.use_type = use_type
        self.input_3d = input_3d
        self.replace = replace
        self.visibility_threshold = visibility_threshold
        self.fit_prior = fit_prior
        n_in = COORD_DIMS + (num_keypoints if use_type else 0) + (2 if fit_prior else 0)
        self.encoder = GraphEncoder(
            num_keypoints, n_in, encoder_hidden, dropout=encoder_dropout, factor=factor
        )
        self.decoder = GraphDecoder(
            num_keypoints, n_in, n_hid=decoder_hidden, dropout=decoder_dropout
        )
        self.encoder3d: GraphEncoder3D | None = None
        if use_3d:
            if shape_basis is None:
                raise ValueError("use_3d=true needs shape_basis (path of a shape-basis .npz)")
            mean, basis, sigma = load_shape_basis(shape_basis)
            if mean.shape[0] != num_keypoints:
                raise ValueError(f"shape basis has {mean.shape[0]} keypoints, not {num_keypoints}")
            if num_basis is not None:
                basis, sigma = basis[:num_basis], sigma[:num_basis]
            # conditioning only (s and t absorb it): centre the mean shape and scale the model
            # to unit RMS radius, so the initial projection (s = 1, t = 0) fills the ROI frame
            mean = mean - mean.mean(dim=0)
            radius = mean.pow(2).sum(-1).mean().sqrt().clamp_min(1e-8)
            mean, sigma = mean / radius, sigma / radius
            self.encoder3d = GraphEncoder3D(
                mean,
                basis,
                sigma,
                n_in,
                hidden_3d,
                dropout_3d,
                factor,
                camera_3d,
                fit_iterations,
                fit_rounds,
                fit_cauchy,
                weight_offset_max,
            )

    def make_nodes(self, xy: Tensor, confidence: Tensor) -> Tensor:
        """Nodes from ROI-frame points ``(N, K, 2)`` and confidences ``(N, K)`` (graph-only
        training on noisy ground truth)."""
        nodes = torch.cat([xy, confidence[..., None]], dim=-1)
        if self.use_type:
            n, k = confidence.shape
            types = torch.eye(k, dtype=xy.dtype, device=xy.device).expand(n, k, k)
            nodes = torch.cat([nodes, types], dim=-1)
        return nodes

    def forward_graph(self, nodes: Tensor, aspect: Tensor) -> dict[str, Tensor]:
        """Run the KGNNs on nodes ``(N, K, D)`` with ROI aspect ratios ``w / h`` ``(N,)``.

        Returns a dict: ``nodes`` (input ``V``), ``edge_logits`` ``(N, E, 2)``, ``visibility``
        ``(N, K)`` soft node visibility, ``refined`` ``(N, K, D)`` (``V'``), ``keypoints_2d``
        ``(N, K, 2)`` (the 2D-KGNN prediction after ``replace``), ``keypoints_heatmap``
        ``(N, K, 2)``, and with the 3D-KGNN ``keypoints_3d`` ``(N, K, 2)`` (the projection)
        plus its parameters under ``kgnn3d_*``; all points in the ROI frame.
        """
        if self.fit_prior:
            nodes = self._with_fit_prior(nodes, aspect)
        edge_logits = self.encoder(nodes)
        visibility = node_visibility(edge_logits, self.encoder.send, self.num_keypoints)
        if self.decoder_edges == "sender":
            sender = visibility[:, self.encoder.send].clamp(1e-6, 1 - 1e-6)  # (N, E)
            refined = self.decoder(nodes, torch.stack([(1 - sender).log(), sender.log()], -1))
        else:
            refined = self.decoder(nodes, edge_logits)
        heat_xy, refined_xy = nodes[..., :2], refined[..., :2]
        if self.replace == "occluded":
            visible = (visibility > self.visibility_threshold)[..., None]
            keypoints_2d = torch.where(visible, heat_xy, refined_xy)
        else:
            keypoints_2d = refined_xy
        out = {
            "nodes": nodes,
            "edge_logits": edge_logits,
            "visibility": visibility,
            "refined": refined,
            "keypoints_heatmap": heat_xy,
            "keypoints_2d": keypoints_2d,
        }
        if self.encoder3d is not None:
            if self.input_3d == "heatmap":
                source, points = nodes, heat_xy
            elif self.input_3d == "refined":
                source, points = refined, keypoints_2d
            else:  # refined_detached: the 3D loss stops at the 2D-KGNN's output
                source, points = refined.detach(), keypoints_2d.detach()
            res3d = self.encoder3d(source, aspect, points, nodes[..., 2])
            out["keypoints_3d"] = res3d.pop("projection")
            if self.encoder3d.camera == "fitted" and not self.training:
                # diagnostic (evaluation only): the same fit without the learned weights, so
                # the report shows what learning the weights adds to the fit it starts from
                untrained = self.encoder3d(
                    source, aspect, points, nodes[..., 2], learned_weights=False
                )
                out["keypoints_3d_fit"] = untrained["projection"]
            out.update({f"kgnn3d_{k}": v for k, v in res3d.items()})
        return out

    def _with_fit_prior(self, nodes: Tensor, aspect: Tensor) -> Tensor:
        """``nodes`` ``(N, K, D)`` -> ``(N, K, D + 2)``: each node's ROI-frame offset to the
        confidence-weighted robust shape-basis fit (``fit_prior``)."""
        enc = self.encoder3d
        with torch.no_grad():
            xy = nodes[..., :2]
            prior = xy.new_zeros(len(nodes), enc.num_basis)
            weights = nodes[..., 2].clamp(1e-4, 1.0)
            fit = enc.robust_fit(prior, _isotropic(xy, aspect), weights)
            scale, rotation, translation, shape, _ = fit
            proj = scale[:, None, None] * torch.einsum("nij,nkj->nki", rotation, shape)
            proj = _anisotropic(proj + translation[:, None], aspect)
        return torch.cat([nodes, proj - xy], dim=-1)

    def forward(self, heatmap_logits: Tensor, aspect: Tensor) -> dict[str, Tensor]:
        """Heatmap logits ``(N, K, R, R)`` and ROI aspect ratios ``(N,)`` -> see
        :meth:`forward_graph`."""
        return self.forward_graph(heatmaps_to_graph(heatmap_logits, self.use_type), aspect)


def load_graph_head(graph_head: KeypointGraphNet, checkpoint: str | Path) -> None:
    """Load the ``graph_head.*`` weights of an ``OcclusionGraphNet`` checkpoint
    (``occaist.models.occlusion_net.module``) into ``graph_head``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"graph head checkpoint {path} not found (train occnet_graph)")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "graph_head."
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise KeyError(f"{path} holds no {prefix}* weights: not an occnet_graph checkpoint")
    graph_head.load_state_dict(sub, strict=True)
