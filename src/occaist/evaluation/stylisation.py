"""How far a style transfer moved the renders towards the real domain, and what it kept.

Three measures of a stylisation ``x -> G(x)`` of synthetic renders x, against real segments y
(thesis chapter 6 asks whether stylised renders are "closer to the real images"):

* :func:`two_sample_auc`: a **two-sample classifier test**. A fresh small CNN (fixed
  architecture, seed and budget, so values are comparable between runs) is trained to tell one
  image set from the other; its AUC on held-out images (2-fold cross-fitting, every image scored
  once by the model that did not see it) is 0.5 when the sets are indistinguishable and 1 when
  they are separable. A one-sided "real vs render" classifier is not used: it rewards any damage
  that makes an image look "not like a clean render" (a grey silhouette scores as real).
* :func:`colour_correlation`: per image, the Pearson correlation of the foreground RGB values of
  x and G(x) (1 for the identity; about 0 when the colours are lost).
* :func:`alpha_iou`: per image, the IoU of the foreground masks of x and G(x) (the annotation
  AIST must keep; 1 for the identity).

:class:`StylisationEvaluator` turns per-sample records (``x``, ``G(x)``, a real segment ``y``)
into a :class:`~occaist.evaluation.base.Report` with a ``domain_gap`` table (the originals,
i.e. the identity, as the baseline row beside the stylisation) and a montage.

Images are uint8 arrays (H, W, 3) or float tensors in [-1, 1]; the foreground is "any RGB
channel > 0" in uint8 (the colour-corrected background is exactly RGB 0, see
:func:`occaist.data.rgba.color_correct`), or an explicit alpha channel when given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from occaist.evaluation.base import Evaluator, Report


@dataclass(frozen=True)
class ClassifierBudget:
    """The two-sample test's fixed classifier and budget (change it and values are not comparable).

    Attributes:
        image_size: images are resized to this side before classification.
        channels: widths of the three stride-2 convolutions.
        epochs: passes over each fold's training half.
        batch_size, lr: Adam mini-batches.
        max_per_set: at most this many images of each set are used (the first ones).
        seed: seed of the initialisation, the fold split and the batch order.
        repeats: the test is run this many times with seeds ``seed + 1000 r`` (another fold
            split, initialisation and batch order each time) and the AUCs are averaged. One run
            on the demo world spreads by several hundredths between seeds (originals 0.856,
            0.842, 0.767 for seeds 0, 1, 2), more than the differences a stylisation makes;
            the mean of ``repeats`` runs narrows that. Repeat 0 is the single run of seed
            ``seed``.
    """

    image_size: int = 64
    channels: tuple[int, int, int] = (16, 32, 64)
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    max_per_set: int = 256
    seed: int = 0
    repeats: int = 3


def _as_float(images: Any) -> Tensor:
    """uint8 (N, H, W, C) array / tensor or float (N, C, H, W) in [-1, 1] -> float (N, 3, H, W)."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if t.dtype == torch.uint8:
        t = t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return t[:, :3].float()


def foreground(images: Any) -> Tensor:
    """Foreground mask (N, H, W): any RGB channel above the background value.

    uint8 images: any channel > 0; float images in [-1, 1]: any channel > -1 + 1/255 (the
    thesis's Alpha proxy with the colour-corrected threshold of :mod:`occaist.models.aist.losses`).
    """
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if t.dtype == torch.uint8:
        return (t[..., :3] > 0).any(dim=-1)
    return (t[:, :3] > -1.0 + 1.0 / 255.0).any(dim=1)


def alpha_iou(originals: Any, stylised: Any) -> np.ndarray:
    """Per-image IoU of the foregrounds of ``originals`` and ``stylised`` (N,); 1 if both empty."""
    a, b = foreground(originals), foreground(stylised)
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return iou.numpy()


def colour_correlation(originals: Any, stylised: Any) -> np.ndarray:
    """Per-image Pearson correlation of foreground RGB values of x and G(x) (N,).

    The foreground is the original's; the three channels' values are pooled, so a change of hue
    lowers it as well as a loss of shading. NaN for an image with fewer than two foreground
    pixels or a constant foreground.
    """
    x, gx = _as_float(originals).double(), _as_float(stylised).double()
    mask = foreground(originals)
    out = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        m = mask[i]
        if int(m.sum()) < 2:
            continue
        a = x[i][:, m].flatten()
        b = gx[i][:, m].flatten()
        a, b = a - a.mean(), b - b.mean()
        norm_a, norm_b = float(a.norm()), float(b.norm())
        if norm_a > 0:  # a constant stylisation keeps no colour at all: correlation 0
            out[i] = float((a * b).sum()) / (norm_a * norm_b) if norm_b > 0 else 0.0
    return out


def foreground_statistics(images: Any) -> dict[str, float]:
    """What a set of images looks like on its foreground (means over images; uint8 or [-1, 1]).

    ``brightness``: mean RGB in [0, 1]; ``brightness_spread``: the standard deviation of the
    per-image brightness (how different the cars of the set are); ``saturation``: mean HSV
    saturation (max - min) / max; ``noise``: standard deviation of the grey level minus its 3x3
    mean, over foreground pixels at least two pixels inside the silhouette (sensor noise and fine
    texture; a flat-shaded render has little). Images with no such pixels are left out of
    ``noise``.
    """
    rgb = (_as_float(images).double() + 1.0) / 2.0  # (N, 3, H, W) in [0, 1]
    mask = foreground(images)
    grey = rgb.mean(dim=1, keepdim=True)
    local = nn.functional.avg_pool2d(grey, 3, stride=1, padding=1, count_include_pad=False)
    inner = -nn.functional.max_pool2d(-mask[:, None].double(), 5, stride=1, padding=2)
    value, low = rgb.amax(dim=1), rgb.amin(dim=1)
    saturation = torch.where(value > 0, (value - low) / value.clamp_min(1e-6), 0.0)
    bright, sat, noise = [], [], []
    for i in range(rgb.shape[0]):
        m = mask[i]
        if not m.any():
            continue
        bright.append(float(rgb[i][:, m].mean()))
        sat.append(float(saturation[i][m].mean()))
        core = inner[i, 0] > 0.5
        if int(core.sum()) > 10:
            noise.append(float((grey[i, 0] - local[i, 0])[core].std()))
    nan = float("nan")
    return {
        "brightness": float(np.mean(bright)) if bright else nan,
        "brightness_spread": float(np.std(bright)) if bright else nan,
        "saturation": float(np.mean(sat)) if sat else nan,
        "noise": float(np.mean(noise)) if noise else nan,
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size, dtype=np.float64)
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < values.size:  # average ranks over ties
        j = i
        while j + 1 < values.size and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _classifier(channels: tuple[int, int, int]) -> nn.Module:
    c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(3, c1, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c2, c3, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, 1),
    )


def _fit_and_score(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, budget: ClassifierBudget, seed: int
) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _classifier(budget.channels)
    optimiser = torch.optim.Adam(net.parameters(), lr=budget.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    n = train_x.shape[0]
    net.train()
    for _ in range(budget.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, budget.batch_size):
            idx = order[start : start + budget.batch_size]
            batch = train_x[idx]
            flip = torch.rand(idx.numel(), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = loss_fn(net(batch).squeeze(1), train_y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        return net(test_x).squeeze(1)


def two_sample_auc(
    set_a: Any, set_b: Any, budget: ClassifierBudget | None = None
) -> dict[str, float]:
    """Held-out AUC of a fresh classifier telling ``set_a`` (label 0) from ``set_b`` (label 1).

    Both sets are cut to the same size (the first ``min(len_a, len_b, max_per_set)`` images),
    resized to ``budget.image_size`` and split into two folds (stratified, seeded); a classifier
    trained on one fold scores the other, and the AUC is computed over all held-out scores. This
    is repeated ``budget.repeats`` times with other seeds and the AUCs are averaged.
    Deterministic for fixed inputs and budget on one thread (the global RNG is left untouched).

    Returns ``{"auc": mean, "auc_std": spread over the repeats, "n_per_set": ...}``; the AUC is
    NaN when a set has under 4 images.
    """
    budget = budget or ClassifierBudget()
    a, b = _as_float(set_a), _as_float(set_b)
    n = min(a.shape[0], b.shape[0], budget.max_per_set)
    if n < 4:
        return {"auc": float("nan"), "auc_std": float("nan"), "n_per_set": float(n)}
    size = (budget.image_size, budget.image_size)
    images = torch.cat([a[:n], b[:n]])
    if images.shape[-2:] != size:
        images = nn.functional.interpolate(images, size=size, mode="area")
    labels = torch.cat([torch.zeros(n), torch.ones(n)])
    aucs = [
        _held_out_auc(images, labels, n, budget, budget.seed + 1000 * r)
        for r in range(max(1, budget.repeats))
    ]
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "n_per_set": float(n),
    }


def _held_out_auc(
    images: Tensor, labels: Tensor, n: int, budget: ClassifierBudget, seed: int
) -> float:
    """One run of the test: a stratified 2-fold split drawn with ``seed``, cross-fitted."""
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(2 * n, dtype=torch.long)
    for part in (torch.arange(n), torch.arange(n, 2 * n)):  # stratified halves
        perm = part[torch.randperm(n, generator=generator)]
        fold[perm[: n // 2]] = 0
        fold[perm[n // 2 :]] = 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same floats on every machine and run
    try:  # callable from a test or validation loop, where gradients and float32 may be off
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            torch.autocast("cpu", enabled=False),
        ):
            images, labels = images.clone().float(), labels.clone()  # not inference tensors
            scores = _cross_fit(images, labels, fold, budget, seed)
    finally:
        torch.set_num_threads(threads)
    return roc_auc(scores.numpy(), labels.numpy().astype(bool))


def _cross_fit(
    images: Tensor, labels: Tensor, fold: Tensor, budget: ClassifierBudget, seed: int
) -> Tensor:
    """Held-out scores: each fold scored by the classifier trained on the other."""
    scores = torch.empty(labels.shape[0])
    for k in (0, 1):
        train, test = fold != k, fold == k
        scores[test] = _fit_and_score(
            images[train], labels[train], images[test], budget, seed + 1 + k
        )
    return scores.detach()


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, 3) (RGB channels)."""
    rgb = ((images[:, :3].detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return rgb.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def montage(columns: Mapping[str, Sequence[np.ndarray]], rows: int = 6, title: str = "") -> Any:
    """A matplotlib figure: one column per named image list (uint8 (H, W, 3)), ``rows`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, images in columns.items() if len(images)]
    rows = max(1, min(rows, *(len(columns[name]) for name in names))) if names else 1
    fig, axes = plt.subplots(
        rows, max(1, len(names)), figsize=(1.6 * max(1, len(names)), 1.6 * rows), squeeze=False
    )
    for c, name in enumerate(names):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(columns[name][r])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def nearest_real(queries: np.ndarray, real: np.ndarray) -> np.ndarray:
    """For each query image, the real segment nearest in mean squared RGB (for the montage)."""
    q = torch.as_tensor(queries).flatten(1).float()
    r = torch.as_tensor(real).flatten(1).float()
    return real[torch.cdist(q, r).argmin(1).numpy()]


def domain_gap_rows(
    originals: np.ndarray,
    stylised: Mapping[str, np.ndarray],
    real: np.ndarray,
    budget: ClassifierBudget | None = None,
) -> list[dict[str, Any]]:
    """The ``domain_gap`` table: the originals (identity) row, then one row per stylisation.

    Columns: ``method``, ``two_sample_auc`` (vs ``real``; 0.5 = indistinguishable; the mean
    over the budget's repeats), ``two_sample_auc_std`` (their spread), ``auc_minus_originals``
    (negative: closer to the real segments than the renders were),
    ``colour_correlation`` and ``alpha_iou`` (means over images, vs ``originals``), the set's
    :func:`foreground_statistics` (compare them with the real segments'), ``images``.
    """
    rows: list[dict[str, Any]] = []
    for name, images in {"originals (identity)": originals, **stylised}.items():
        test = two_sample_auc(images, real, budget)
        rows.append(
            {
                "method": name,
                "two_sample_auc": test["auc"],
                "two_sample_auc_std": test["auc_std"],
                "auc_minus_originals": test["auc"]
                - (rows[0]["two_sample_auc"] if rows else test["auc"]),
                "colour_correlation": float(np.nanmean(colour_correlation(originals, images))),
                "alpha_iou": float(np.mean(alpha_iou(originals, images))),
                **foreground_statistics(images),
                "images": len(images),
                "real_images": len(real),
            }
        )
    return rows


def stylisation_score(auc: float, colour_corr: float, iou: float) -> float:
    """One number in [0, 1] for sweeps (higher is better): mean of closeness, colour, IoU.

    closeness = 1 - 2 max(0, AUC - 0.5): 1 when the two-sample test cannot tell the stylised
    renders from the real segments, 0 when it separates them perfectly; the colour correlation
    is clipped to [0, 1]. A NaN AUC (too few images) leaves the mean of the other two.
    """
    parts = [min(1.0, max(0.0, colour_corr)) if np.isfinite(colour_corr) else 0.0, iou]
    if np.isfinite(auc):
        parts.append(1.0 - 2.0 * min(0.5, max(0.0, auc - 0.5)))
    return float(np.mean(parts))


def stylisation_measures(
    originals: np.ndarray,
    stylised: np.ndarray,
    real: np.ndarray,
    budget: ClassifierBudget | None = None,
) -> dict[str, float]:
    """``two_sample_auc`` (stylised vs real), ``colour_correlation``, ``alpha_iou`` (means) and
    their :func:`stylisation_score`, for logging during training (uint8 (N, H, W, 3) arrays)."""
    auc = two_sample_auc(stylised, real, budget)["auc"] if len(real) >= 4 else float("nan")
    corr = colour_correlation(originals, stylised)
    corr_mean = float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
    iou = float(np.mean(alpha_iou(originals, stylised)))
    return {
        "two_sample_auc": auc,
        "colour_correlation": corr_mean,
        "alpha_iou": iou,
        "stylisation_score": stylisation_score(auc, corr_mean, iou),
    }


def log_image_panels(
    loggers: Sequence[Any], key: str, tiles: Sequence[Tensor], caption: str, step: int
) -> None:
    """The first image of each tile batch, in [-1, 1], side by side (rows of 5), to W&B or
    TensorBoard loggers (others are skipped). Masks (B, 1, H, W) in [0, 1] are shown grey."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    loggers = [lg for lg in loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
    if not loggers:
        return
    from torchvision.utils import make_grid

    images = []
    for tile in tiles:
        t = tile[:1].detach().float().cpu()
        images.append(t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else ((t[:, :3] + 1) / 2))
    grid = make_grid(torch.cat(images).clamp(0, 1), nrow=5, padding=2)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[grid], caption=[caption], step=step)
        else:
            lg.experiment.add_image(key, grid, step)


class StylisationEvaluator(Evaluator):
    """Report of a style transfer from records ``{"index", "x", "fake_y", "y", "real_index"}``.

    ``x`` (the render), ``fake_y`` (its stylisation) and ``y`` (a real segment, identified by
    ``real_index``: each distinct segment is used once) are uint8 (H, W, 3) arrays. The report
    has the summary (two-sample AUC of the stylised and of the original renders against the real
    segments, colour correlation, alpha IoU, score), the ``domain_gap`` table (originals as the
    baseline row), per-sample colour correlation and IoU, and the montage
    ``stylisation_montage`` (original, stylised, nearest real segment).
    """

    unique_key = "index"

    def __init__(self, budget: ClassifierBudget | None = None, name: str = "stylised") -> None:
        super().__init__()
        self.budget = budget or ClassifierBudget()
        self.name = name

    def evaluate(self, records: list[dict[str, Any]], context: dict[str, Any]) -> Report:
        records = sorted(records, key=lambda r: r["index"])
        x = np.stack([r["x"] for r in records])
        fake = np.stack([r["fake_y"] for r in records])
        # the real segments of a test set repeat when it has fewer of them than renders
        real = np.stack(list({r.get("real_index", r["index"]): r["y"] for r in records}.values()))
        rows = domain_gap_rows(x, {self.name: fake}, real, self.budget)
        corr, iou = colour_correlation(x, fake), alpha_iou(x, fake)
        model = rows[-1]
        summary = {
            "split": context.get("split", "test"),
            "two_sample_auc": model["two_sample_auc"],
            "two_sample_auc_originals": rows[0]["two_sample_auc"],
            "colour_correlation": model["colour_correlation"],
            "alpha_iou": model["alpha_iou"],
            "stylisation_score": stylisation_score(
                model["two_sample_auc"], model["colour_correlation"], model["alpha_iou"]
            ),
            "images": len(records),
            **{f"metric/{k}": v for k, v in context.get("metrics", {}).items()},
        }
        figure = montage(
            {"original": x, self.name: fake, "nearest real": nearest_real(fake, real)},
            title="original / stylised / nearest real segment",
        )
        return Report(
            summary=summary,
            tables={"domain_gap": rows},
            samples={
                "stylisation_per_image": [
                    {"index": r["index"], "colour_correlation": float(c), "alpha_iou": float(i)}
                    for r, c, i in zip(records, corr, iou, strict=True)
                ]
            },
            figures={"stylisation_montage": figure},
        )
