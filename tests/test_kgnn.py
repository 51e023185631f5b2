"""Graph nets of Occlusion-Net: edge enumeration, shapes, eval determinism, labels, 3D head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occaist.models.occlusion_net.kgnn import (
    GraphDecoder,
    GraphEncoder,
    KeypointGraphNet,
    edge_labels,
    fully_connected_edges,
    heatmaps_to_graph,
    image_to_roi,
    node_visibility,
    roi_to_image,
)
from occaist.models.occlusion_net.losses import edge_loss, heatmap_targets, masked_l2


@pytest.fixture(scope="module")
def basis_file(tmp_path_factory) -> str:
    from occaist.data.keypoints import FLIP_PERMUTATION, LATERAL_AXIS
    from occaist.geometry.shape_basis import ShapeBasis

    rng = np.random.default_rng(0)
    shapes = rng.normal(size=(30, 14, 3)) * 0.1 + rng.normal(size=(1, 14, 3))
    path = tmp_path_factory.mktemp("basis") / "shape_basis.npz"
    ShapeBasis.fit(shapes, 4, FLIP_PERMUTATION, LATERAL_AXIS).save(path)
    return str(path)


def test_edges_row_major_182() -> None:
    send, receive = fully_connected_edges(14)
    assert send.shape == receive.shape == (182,)
    assert (send != receive).all()
    assert (send[:13] == 0).all() and receive[:13].tolist() == list(range(1, 14))
    pairs = set(zip(send.tolist(), receive.tolist(), strict=True))
    assert len(pairs) == 182


def test_heatmaps_to_graph_cell_centres_and_confidence() -> None:
    logits = torch.full((2, 14, 8, 8), -10.0)
    logits[0, 3, 2, 5] = 10.0  # row 2, column 5
    nodes = heatmaps_to_graph(logits, use_type=True)
    assert nodes.shape == (2, 14, 17)
    assert torch.allclose(nodes[0, 3, :2], torch.tensor([2 * 5.5 / 8 - 1, 2 * 2.5 / 8 - 1]))
    peak = logits[0, 3].flatten().softmax(0).max()
    assert torch.isclose(nodes[0, 3, 2], peak)
    assert torch.equal(nodes[1, :, 3:], torch.eye(14))
    assert heatmaps_to_graph(logits, use_type=False).shape == (2, 14, 3)


def test_roi_frame_round_trip() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    pts = torch.tensor([[[10.0, 20.0], [50.0, 100.0], [30.0, 60.0]]])
    roi = image_to_roi(pts, boxes)
    assert torch.allclose(roi, torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]]))
    assert torch.allclose(roi_to_image(roi, boxes), pts)


def test_edge_labels_and_node_visibility() -> None:
    send, receive = fully_connected_edges(4)
    visible = torch.tensor([[True, True, False, True]])
    labels = edge_labels(visible, send, receive)
    want = [int(visible[0, i] and visible[0, j]) for i, j in zip(send, receive, strict=True)]
    assert labels[0].tolist() == want
    logits = torch.stack([1.0 - 2.0 * labels.float(), 2.0 * labels.float() - 1.0], dim=-1) * 5
    vis = node_visibility(logits, send, 4)
    assert ((vis > 0.5) == visible).all()
    assert edge_loss(logits, visible, send, receive) < 0.01


def test_encoder_decoder_shapes_and_eval_determinism() -> None:
    torch.manual_seed(0)
    enc = GraphEncoder(14, 17, 32, dropout=0.5)
    dec = GraphDecoder(14, 17, n_hid=32, dropout=0.5)
    nodes = torch.randn(3, 14, 17)
    logits = enc(nodes)
    assert logits.shape == (3, 182, 2)
    assert GraphEncoder(14, 17, 32, factor=True)(nodes).shape == (3, 182, 2)
    enc.eval()
    h = enc.mlp1(nodes)
    assert torch.allclose(enc._edge_fc1(h), enc.mlp2.fc1(enc.node2edge(h)), atol=1e-5)
    out = dec(nodes, logits)
    assert out.shape == nodes.shape
    assert torch.equal(out[..., 3:], nodes[..., 3:])  # type one-hot carried unchanged
    dec.train()
    assert not torch.equal(dec(nodes, logits), dec(nodes, logits))  # dropout active in training
    dec.eval()
    assert torch.equal(dec(nodes, logits), dec(nodes, logits))  # off at inference (upstream bug)


def test_graph_net_outputs_and_replace(basis_file: str) -> None:
    torch.manual_seed(0)
    net = KeypointGraphNet(
        encoder_hidden=32, decoder_hidden=32, hidden_3d=32, shape_basis=basis_file
    ).eval()
    with torch.no_grad():  # the output layer's bias alone: the identity camera
        net.encoder3d.fc_out.weight.zero_()
    logits = torch.randn(2, 14, 56, 56)
    out = net(logits, torch.tensor([1.0, 2.0]))
    assert out["edge_logits"].shape == (2, 182, 2)
    assert out["keypoints_3d"].shape == out["keypoints_2d"].shape == (2, 14, 2)
    assert out["kgnn3d_beta"].shape == (2, 4)
    assert torch.allclose(out["kgnn3d_quaternion"].norm(dim=-1), torch.ones(2))
    assert (out["kgnn3d_scale"] > 0).all()
    vis = (out["visibility"] > 0.5)[..., None]
    expect = torch.where(vis, out["keypoints_heatmap"], out["refined"][..., :2])
    assert torch.equal(out["keypoints_2d"], expect)
    # 3D projection: mean shape at init (beta=0, identity rotation, unit scale, y scaled by w/h)
    mean = net.encoder3d.mean
    assert torch.allclose(
        out["keypoints_3d"][1], mean[:, :2] * torch.tensor([1.0, 2.0]), atol=1e-5
    )
    out.pop("keypoints_3d").sum().backward()


def test_losses_formulas() -> None:
    kps = torch.tensor([[[1.0, 2.0, 2.0], [3.0, 4.0, 1.0], [0.0, 0.0, 0.0]]])
    assert heatmap_targets(kps, "visible")[0, :, 2].tolist() == [2.0, 0.0, 0.0]
    assert torch.equal(heatmap_targets(kps, "all"), kps)
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.isclose(masked_l2(pred, target, mask), torch.tensor(13.0))
    assert masked_l2(pred, target, torch.zeros_like(mask)) == 0


def test_kgnn3d_is_a_graph_net_over_182_edges(basis_file: str) -> None:
    """Upstream's 3D head: message passing over the directed edges, edge-to-node, flatten,
    linear. Its node features are permutation-equivariant (a flat MLP's are not), and its size at
    width 512 on (x, y, c) nodes with 5 shape coefficients matches upstream's layer count."""
    from occaist.models.occlusion_net.kgnn import GraphEncoder3D

    torch.manual_seed(0)
    k, b = 14, 5
    enc = GraphEncoder3D(torch.randn(k, 3), torch.randn(b, k, 3), torch.ones(b), 3, 512, 0.5)
    assert enc.send.shape == enc.receive.shape == (182,)
    h = 512
    mlp = lambda a, o: a * h + h + h * o + o + 2 * o  # noqa: E731  fc1, fc2, batch norm
    expected = mlp(3, h) + mlp(2 * h, h) + mlp(h, h) + mlp(2 * h, h) + k * h * (b + 7) + b + 7
    assert sum(p.numel() for p in enc.parameters()) == expected  # ~2.46 M
    enc.eval()
    nodes, perm = torch.randn(2, k, 3), torch.randperm(k)
    feats = enc.edge2node(enc.edge_features(nodes))
    feats_perm = enc.edge2node(enc.edge_features(nodes[:, perm]))
    assert torch.allclose(feats_perm, feats[:, perm], atol=1e-5)
    out = enc(nodes, torch.ones(2))
    out["projection"].sum().backward()
    assert enc.mlp1.fc1.weight.grad.abs().sum() > 0  # the graph stack is trained through


def test_fit_camera_recovers_a_weak_perspective_camera_and_ignores_zero_weights() -> None:
    """The closed-form camera of ``camera_3d=fitted``: exact on noise-free projections, a point
    with weight 0 does not move it, a scaled rotation (orthonormal rows), finite gradients when
    the two singular values are equal (where an SVD's gradient is not)."""
    from occaist.geometry.quaternion import quaternion_rotate
    from occaist.models.occlusion_net.kgnn import fit_camera

    g = torch.Generator().manual_seed(0)
    shape = torch.randn(3, 14, 3, generator=g, dtype=torch.float64)
    quat = torch.nn.functional.normalize(
        torch.randn(3, 4, generator=g, dtype=torch.float64), dim=-1
    )
    truth = 2.5 * quaternion_rotate(shape, quat)[..., :2] + torch.tensor([0.3, -0.2])
    points = truth.clone()
    points[:, 0] += 10.0  # a gross error on node 0 ...
    weights = torch.ones(3, 14, dtype=torch.float64)
    weights[:, 0] = 0.0  # ... with no weight
    weights.requires_grad_(True)
    scale, rot, t = fit_camera(shape, points, weights)
    proj = scale[:, None, None] * torch.einsum("nij,nkj->nki", rot, shape) + t[:, None]
    assert torch.allclose(scale, torch.full((3,), 2.5, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(proj, truth, atol=1e-4)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(2, dtype=torch.float64))
    proj.sum().backward()
    assert weights.grad.isfinite().all()
    # uniform weights on the corrupted points: the error pulls the fit (weights matter)
    s2, r2, t2 = fit_camera(shape, points, torch.ones(3, 14, dtype=torch.float64))
    proj2 = s2[:, None, None] * torch.einsum("nij,nkj->nki", r2, shape) + t2[:, None]
    assert (proj2 - truth).abs().max() > 0.1


def test_fit_camera_gradient_stays_finite_when_the_points_are_degenerate() -> None:
    """Points all but in one place (spread 1e-19) give an affine fit near 0, whose 2 x 2 Gram
    matrix underflows: ``torch.linalg.det``'s backward returned NaN there (0 times an infinite
    inverse; a 1200-step training run stopped at step 513 on it, with a Gram matrix of 1e-38);
    the closed-form determinant keeps the gradient finite."""
    from occaist.models.occlusion_net.kgnn import fit_camera

    g = torch.Generator().manual_seed(1)
    shape = torch.randn(2, 14, 3, generator=g)
    points = (1e-19 * torch.randn(2, 14, 2, generator=g)).requires_grad_(True)
    weights = torch.rand(2, 14, generator=g).requires_grad_(True)
    scale, rot, t = fit_camera(shape, points, weights)
    (scale.sum() + rot.sum() + t.sum()).backward()
    assert weights.grad is not None and weights.grad.isfinite().all()
    assert points.grad is not None and points.grad.isfinite().all()


def test_fitted_camera_graph_net_projects_the_mean_shape_onto_its_points(basis_file) -> None:
    """``camera_3d=fitted``: the last layer gives node weights (no camera, no beta); at beta = 0
    the projection is the mean shape fitted to the 2D-KGNN's keypoints in the isotropic frame,
    so points that are an exact projection of the mean shape come back unchanged."""
    from occaist.geometry.quaternion import quaternion_rotate

    torch.manual_seed(0)
    net = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, hidden_3d=16, shape_basis=basis_file,
        camera_3d="fitted", input_3d="heatmap",
    ).eval()  # fmt: skip
    with pytest.raises(ValueError, match="camera"):
        KeypointGraphNet(shape_basis=basis_file, camera_3d="guessed")
    enc = net.encoder3d
    assert enc.fc_out.out_features == 14  # one weight per node, beta is fitted
    with torch.no_grad():
        enc.fc_out.weight.zero_()  # weights = the confidences (1/2)
    quat = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1, 0.3, -0.2]]), dim=-1)
    aspect = torch.tensor([2.0])
    iso = 0.4 * quaternion_rotate(enc.mean[None], quat)[..., :2] + 0.1
    xy = torch.stack([iso[..., 0], iso[..., 1] * aspect], dim=-1)  # ROI frame
    out = net.forward_graph(net.make_nodes(xy, torch.full((1, 14), 0.5)), aspect)
    assert torch.allclose(out["keypoints_3d"], xy, atol=1e-4)
    assert torch.allclose(out["kgnn3d_weights"], torch.full((1, 14), 0.5))
    assert "kgnn3d_quaternion" not in out


@pytest.mark.parametrize("mode", ["edge", "sender"])
def test_decoder_message_types_from_edges_or_from_the_sender(mode: str) -> None:
    """``decoder_edges``: the decoder's type weights are the encoder's edge probabilities
    (paper) or the sender's node visibility (ours), so that messages into a node differ with
    the visibility of their sender."""
    torch.manual_seed(0)
    net = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, use_3d=False, decoder_edges=mode
    ).eval()
    seen = {}

    def spy(nodes, logits):
        seen["q"] = logits.softmax(-1)
        return nodes

    net.decoder.forward = spy
    out = net.forward_graph(net.make_nodes(torch.rand(2, 14, 2), torch.rand(2, 14)), None)
    if mode == "edge":
        expect = out["edge_logits"].softmax(-1)
    else:
        vis = out["visibility"][:, net.encoder.send]
        expect = torch.stack([1 - vis, vis], -1)
    assert torch.allclose(seen["q"], expect, atol=1e-5)
    with pytest.raises(ValueError, match="decoder_edges"):
        KeypointGraphNet(use_3d=False, decoder_edges="both")


def test_fit_beta_recovers_the_coefficients_and_the_ridge_pulls_to_the_prior() -> None:
    """The closed-form shape step of ``camera_3d=fitted``: exact coefficients on noise-free
    points with the true camera (tiny ridge); a large ridge returns the prior instead."""
    from occaist.models.occlusion_net.kgnn import fit_beta

    g = torch.Generator().manual_seed(1)
    mean = torch.randn(14, 3, generator=g, dtype=torch.float64)
    comps = 0.3 * torch.randn(3, 14, 3, generator=g, dtype=torch.float64)
    beta = torch.randn(2, 3, generator=g, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(2, 3, 3, generator=g, dtype=torch.float64))[0][:, :2]
    scale = torch.tensor([1.5, 0.7], dtype=torch.float64)
    t = torch.randn(2, 2, generator=g, dtype=torch.float64)
    shape = mean + torch.einsum("nb,bkc->nkc", beta, comps)
    points = scale[:, None, None] * torch.einsum("nij,nkj->nki", rot, shape) + t[:, None]
    w = torch.ones(2, 14, dtype=torch.float64)
    prior = torch.zeros(2, 3, dtype=torch.float64)
    got = fit_beta(prior, mean, comps, scale, rot, t, points, w, ridge=1e-9)
    assert torch.allclose(got, beta, atol=1e-6)
    stiff = fit_beta(prior + 5.0, mean, comps, scale, rot, t, points, w, ridge=1e6)
    assert torch.allclose(stiff, prior + 5.0, atol=1e-3)


def test_untrained_fitted_3d_kgnn_is_the_robust_least_squares_baseline(basis_file) -> None:
    """``camera_3d=fitted`` with a zero output layer (what training starts from) must be the
    no-learning baseline of ``occaist.geometry.shape_fit``: weights = the node confidences,
    Cauchy reweighting rounds, the ridge pulling beta to the network's (here 0) in every
    alternation. Noisy projections of basis shapes with gross outliers, square ROIs (so both
    Cauchy scales are 3 % of the side)."""
    from occaist.geometry.quaternion import quaternion_rotate
    from occaist.geometry.shape_fit import robust_fit_shape_basis

    torch.manual_seed(1)
    net = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, hidden_3d=16, shape_basis=basis_file,
        camera_3d="fitted", input_3d="heatmap", fit_iterations=50, fit_rounds=6,
    ).eval()  # fmt: skip
    enc = net.encoder3d
    with torch.no_grad():
        enc.fc_out.weight.zero_()
    n = 16
    beta = torch.randn(n, enc.num_basis)
    shape = enc.mean + torch.einsum("nb,b,bkc->nkc", beta, enc.sigma, enc.basis)
    quat = torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    xy = 0.4 * quaternion_rotate(shape, quat)[..., :2] + 0.05 * torch.randn(n, 1, 2)
    xy = xy + 0.02 * torch.randn_like(xy)
    xy[:, 3] += 0.5  # one gross error per instance
    conf = torch.rand(n, 14) * 0.9 + 0.1
    aspect = torch.ones(n)
    out = net.forward_graph(net.make_nodes(xy, conf), aspect)
    ref = robust_fit_shape_basis(
        xy.double().numpy(), conf.double().numpy(), enc.mean.double().numpy(),
        enc.basis.double().numpy(), enc.sigma.double().numpy(), np.full(n, 2.0),
    )  # fmt: skip
    got = out["keypoints_3d"].detach().double().numpy()
    assert np.abs(got - ref["projection"]).max() < 2e-3
    # and the robust fit is not the plain one: the outlier moved it
    assert np.abs(got[:, 3] - xy[:, 3].numpy()).max() > 0.2


def test_fitted_3d_kgnn_reports_its_fit_without_the_learned_weights(basis_file) -> None:
    """The evaluation's diagnostic row: in eval mode the fitted camera also returns the fit with
    its learned weight offsets left out (``keypoints_3d_fit``), which is the prediction itself
    for an untrained head and differs once the output layer gives offsets; training batches do
    not pay for it."""
    torch.manual_seed(2)
    net = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, hidden_3d=16, shape_basis=basis_file,
        camera_3d="fitted", input_3d="heatmap",
    ).eval()  # fmt: skip
    enc = net.encoder3d
    xy = 0.3 * torch.randn(4, 14, 2)
    nodes, aspect = net.make_nodes(xy, torch.rand(4, 14) * 0.8 + 0.1), torch.ones(4)
    with torch.no_grad():
        enc.fc_out.weight.zero_()
        out = net.forward_graph(nodes, aspect)
        assert torch.allclose(out["keypoints_3d_fit"], out["keypoints_3d"])
        enc.fc_out.bias.copy_(torch.linspace(-4.0, 4.0, enc.fc_out.bias.numel()))
        out = net.forward_graph(nodes, aspect)
        untrained = enc(nodes, aspect, learned_weights=False)["projection"]
    assert torch.allclose(out["keypoints_3d_fit"], untrained)
    assert (out["keypoints_3d_fit"] - out["keypoints_3d"]).abs().max() > 1e-3
    assert "keypoints_3d_fit" not in net.train().forward_graph(nodes, aspect)


def test_fit_prior_channels_are_the_offsets_to_the_robust_shape_fit(basis_file) -> None:
    """``fit_prior=true``: both KGNNs read two more channels per node, its offset to the robust
    shape-basis fit of the input graph: 0 for the nodes of an exact projection, the error itself
    for a gross outlier (which the Cauchy rounds leave out of the fit)."""
    from occaist.geometry.quaternion import quaternion_rotate

    with pytest.raises(ValueError, match="use_3d"):
        KeypointGraphNet(use_3d=False, fit_prior=True)
    net = KeypointGraphNet(
        encoder_hidden=16, decoder_hidden=16, hidden_3d=16, shape_basis=basis_file,
        camera_3d="fitted", fit_prior=True,
    ).eval()  # fmt: skip
    assert net.encoder.mlp1.fc1.in_features == 3 + 14 + 2
    quat = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1, 0.3, -0.2]]), dim=-1)
    xy = 0.4 * quaternion_rotate(net.encoder3d.mean[None], quat)[..., :2]
    xy[0, 5] += torch.tensor([0.6, -0.3])
    nodes = net.make_nodes(xy, torch.full((1, 14), 0.8))
    offsets = net._with_fit_prior(nodes, torch.ones(1))[..., -2:]
    keep = torch.arange(14) != 5
    assert offsets[0, keep].abs().max() < 0.02
    assert torch.allclose(offsets[0, 5], torch.tensor([-0.6, 0.3]), atol=0.03)
    out = net.forward_graph(nodes, torch.ones(1))
    assert out["refined"].shape == (1, 14, 19)


def test_weight_offset_max_keeps_the_fitted_weights_near_the_confidences(basis_file) -> None:
    """``weight_offset_max=m``: whatever the last layer says, each node's weight stays within
    ``sigmoid(logit(c) +- m)``; unbounded, a large output drives it to 0 or 1."""
    kw = dict(
        encoder_hidden=8, decoder_hidden=8, hidden_3d=8, shape_basis=basis_file,
        camera_3d="fitted", input_3d="heatmap",
    )  # fmt: skip
    conf = torch.full((2, 14), 0.5)
    nodes_xy = torch.rand(2, 14, 2) * 2 - 1
    for bound in (1.0, None):
        net = KeypointGraphNet(weight_offset_max=bound, **kw).eval()
        with torch.no_grad():
            net.encoder3d.fc_out.weight.zero_()
            net.encoder3d.fc_out.bias.fill_(50.0)  # a huge offset for every node
            w = net.forward_graph(net.make_nodes(nodes_xy, conf), torch.ones(2))["kgnn3d_weights"]
        if bound is None:
            assert float(w.min()) > 0.999
        else:
            assert float(w.max()) <= float(torch.sigmoid(torch.tensor(1.0))) + 1e-6
            assert float(w.min()) > 0.7  # still pushed up, by at most the bound


@pytest.mark.parametrize("mode", ["heatmap", "refined", "refined_detached"])
def test_3d_input_modes_read_v_or_v_prime_and_refined_detached_stops_the_gradient(
    basis_file, mode: str
) -> None:
    """``input_3d``: ``heatmap`` fits V, both refined modes fit the 2D-KGNN's keypoints, and
    only ``refined`` lets the 3D-KGNN's loss reach the 2D-KGNN's decoder."""
    torch.manual_seed(0)
    net = KeypointGraphNet(
        encoder_hidden=8, decoder_hidden=8, hidden_3d=8, shape_basis=basis_file,
        camera_3d="fitted", input_3d=mode, decoder_dropout=0.0, encoder_dropout=0.0,
    )  # fmt: skip
    seen = {}
    net.encoder3d.register_forward_hook(lambda m, args, out: seen.update(points=args[2]))
    nodes = net.make_nodes(torch.rand(3, 14, 2) * 2 - 1, torch.rand(3, 14))
    out = net.forward_graph(nodes, torch.ones(3))
    expected = out["keypoints_heatmap"] if mode == "heatmap" else out["keypoints_2d"]
    assert torch.equal(seen["points"], expected)
    out["keypoints_3d"].sum().backward()
    decoder_grad = sum(p.grad.abs().sum() for p in net.decoder.parameters() if p.grad is not None)
    assert (decoder_grad > 0) == (mode == "refined")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder3d.parameters())
    with pytest.raises(ValueError, match="input_3d"):
        KeypointGraphNet(shape_basis=basis_file, input_3d="refined_stopped")
