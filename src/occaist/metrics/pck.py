"""PCK (percentage of correct keypoints) for occluded-keypoint localisation (Occlusion-Net §5).

A keypoint is correct when ``||p_hat - p||_2 < alpha * L`` with ``L = max(w, h)`` of the
ground-truth box. Visibility codes follow COCO: ``0`` unlabelled, ``1`` labelled but occluded,
``2`` visible. Unlabelled keypoints are excluded from every count (upstream's helper
``count_pck`` counted them as occluded). The caller names the keypoints evaluated (the paper:
12 of the 14 CarFusion keypoints, ``occaist.data.keypoints.EVALUATED_KEYPOINTS``) and PCK is
also reported by the number of occluded keypoints among them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["PCK", "pck", "pck_curves_figure", "plot_pck_curves"]

#: COCO visibility codes.
_OCCLUDED, _VISIBLE = 1, 2


def pck(pred: Tensor, gt: Tensor, visibility: Tensor, bbox: Tensor, alpha: float = 0.1) -> Tensor:
    """Per-keypoint PCK correctness.

    Args:
        pred: ``(..., K, 2)`` predicted keypoints (pixels, x/y).
        gt: ``(..., K, 2)`` ground-truth keypoints.
        visibility: ``(..., K)`` COCO codes (0 unlabelled, 1 occluded, 2 visible).
        bbox: ``(..., 4)`` ground-truth boxes ``(x0, y0, x1, y1)``; ``L = max(x1 - x0, y1 - y0)``.
        alpha: threshold as a fraction of ``L``.

    Returns:
        ``(..., K)`` float: 1 correct, 0 wrong, NaN for unlabelled keypoints (excluded), so
        ``torch.nanmean`` of the result is the PCK.
    """
    size = (bbox[..., 2:] - bbox[..., :2]).amax(dim=-1)  # (...,)
    dist = (pred - gt).norm(dim=-1)  # (..., K)
    correct = (dist < alpha * size[..., None]).to(pred.dtype)
    nan = torch.full_like(correct, float("nan"))
    return torch.where(visibility > 0, correct, nan)


class PCK(Metric):
    """PCK@alpha on visible, occluded and all evaluated keypoints, and by occlusion count.

    ``update(pred, gt, visibility, bbox)`` takes ``(N, K, 2)``, ``(N, K, 2)``, ``(N, K)``,
    ``(N, 4)`` for ``N`` instances. States are sums, so DDP reduction is exact.

    ``compute()`` returns a dict at ``alpha``: ``visible``, ``occluded``, ``all`` and
    ``occluded_<n>`` / ``all_<n>`` for ``n`` = 1..len(keypoints) occluded evaluated keypoints
    (NaN where a bucket is empty). ``curves()`` gives the same at every alpha of ``alphas``
    for PCK-vs-alpha figures.

    Args:
        alpha: the reported threshold (paper: 0.1).
        alphas: thresholds for the curves; ``alpha`` is added when missing.
        keypoints: indices evaluated, given by the caller (``None``: all of them).
    """

    full_state_update = False

    def __init__(
        self,
        alpha: float = 0.1,
        alphas: Sequence[float] = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
        keypoints: Sequence[int] | None = None,
        num_keypoints: int = 14,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.alphas = sorted({float(a) for a in alphas} | {self.alpha})
        self.register_buffer("_alphas", torch.tensor(self.alphas), persistent=False)
        keypoints = list(range(num_keypoints)) if keypoints is None else list(keypoints)
        self.register_buffer("_keypoints", torch.tensor(keypoints), persistent=False)
        n_buckets = len(keypoints) + 1  # 0..K_eval occluded
        shape = (len(self.alphas), n_buckets)
        for group in ("visible", "occluded"):
            self.add_state(f"correct_{group}", torch.zeros(shape), dist_reduce_fx="sum")
            self.add_state(f"total_{group}", torch.zeros(n_buckets), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor, visibility: Tensor, bbox: Tensor) -> None:
        kp = self._keypoints
        pred, gt, visibility = pred[:, kp].float(), gt[:, kp].float(), visibility[:, kp]
        bbox = bbox.float()
        n_occluded = (visibility == _OCCLUDED).sum(dim=1)  # (N,)
        size = (bbox[:, 2:] - bbox[:, :2]).amax(dim=-1)  # (N,)
        dist = (pred - gt).norm(dim=-1)  # (N, K_eval)
        correct = dist[None] < self._alphas[:, None, None] * size[None, :, None]  # (A, N, K_eval)
        for group, code in (("visible", _VISIBLE), ("occluded", _OCCLUDED)):
            mask = visibility == code  # (N, K_eval)
            hits = (correct & mask[None]).sum(dim=-1).float()  # (A, N)
            counts = mask.sum(dim=-1).float()  # (N,)
            acc_c = getattr(self, f"correct_{group}")
            acc_t = getattr(self, f"total_{group}")
            acc_c.index_add_(1, n_occluded, hits)
            acc_t.index_add_(0, n_occluded, counts)

    def curves(self) -> dict[str, Tensor]:
        """PCK per alpha: keys ``visible``, ``occluded``, ``all``, ``occluded_<n>``, ``all_<n>``;
        values ``(A,)`` tensors aligned with ``self.alphas`` (NaN where nothing was counted)."""
        cv, co = self.correct_visible, self.correct_occluded  # (A, B)
        tv, to = self.total_visible, self.total_occluded  # (B,)
        out = {
            "visible": cv.sum(1) / tv.sum(),
            "occluded": co.sum(1) / to.sum(),
            "all": (cv + co).sum(1) / (tv + to).sum(),
        }
        for n in range(1, tv.shape[0]):
            out[f"occluded_{n}"] = co[:, n] / to[n]
            out[f"all_{n}"] = (cv[:, n] + co[:, n]) / (tv[n] + to[n])
        return out

    def compute(self) -> dict[str, Tensor]:
        index = self.alphas.index(self.alpha)
        return {key: value[index] for key, value in self.curves().items()}


def pck_curves_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "PCK vs alpha"
) -> Any:
    """A matplotlib figure of PCK-vs-alpha curves, one line per predictor.

    Args:
        curves: ``{label: (alphas, pck values)}``, e.g. ``{"heatmap": ..., "2D-KGNN": ...}``.
        title: figure title (e.g. ``"3/12 occluded"``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    for label, (alphas, values) in curves.items():
        ax.plot(list(alphas), [100.0 * float(v) for v in values], marker="o", label=label)
    ax.set_xlabel("alpha")
    ax.set_ylabel("PCK (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pck_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "PCK vs alpha",
) -> Path:
    """:func:`pck_curves_figure` saved to ``path`` atomically (the suffix picks the format)."""
    from occaist.utils.io import atomic_path

    fig = pck_curves_figure(curves, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path
