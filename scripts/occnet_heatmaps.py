"""Train a keypoint heatmap network on CarFusion ROIs and write its keypoint graphs.

The 2D-KGNN's input in the evaluation of ``docs/occlusion_net.md``: a trained network's
heatmaps, on jittered ground-truth boxes (never the exact hull). A CPU-sized stand-in for
Keypoint R-CNN's keypoint branch: the ROI is cut from the image with RoIAlign (``--crop`` pixels
square, as the R-CNN pools its ROIs, but from the image instead of FPN features), a small
encoder-decoder (:class:`HeatmapNet`) gives ``K`` logit maps of ``--resolution`` cells, trained
with the R-CNN's loss (cross-entropy over the cells, one per labelled keypoint inside the ROI,
occluded ones included: upstream's ``all``). Augmentation: fresh box jitter, horizontal flip
with the left/right swap, colour jitter.

Then every instance's graph ``(x, y, c)`` (argmax cell centre in the ROI frame and softmax
peak, ``kgnn.heatmaps_to_graph``) is written with its ground truth and ROI to ``--out`` as
``{split: {"keypoints", "box", "roi", "nodes"}}`` for ``data.heatmap_graphs`` of
``experiment=occnet_graph``. Training graphs come from ``--folds`` networks, each predicting the
instances it was not trained on (cross-fitting), so the graph head learns from test-like errors;
test graphs from the network trained on every training instance.

Cross-fitting folds are groups (``--group``): ``sequence`` (default) deals the training
sequences round-robin to the folds, so each network predicts sequences it never saw, as the
test network does; ``car`` keeps every view of one car (same sequence and instance id, all
cameras and frames) in one fold; ``instance`` splits single instances (the earlier recipe: the
same car seen from another camera or frame sits in the other fold, so its held-out graphs were
easier than the test ones: PCK@0.1 77.0 / 70.7 visible / occluded against 64.1 / 59.6 on the
demo world's test sequence).

    python scripts/occnet_heatmaps.py --root /tmp/occ/world/carfusion --out /tmp/occ/heatmaps.pt

``--parts`` splits the work into shorter runs (``--parts test``, then ``--parts fold0 fold1``,
...): each network's graphs and times are kept under ``<out>.parts/`` (delete it to start
afresh), and the output is written by the run that completes the set.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from occaist.data.carfusion import scan_carfusion
from occaist.data.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS
from occaist.models.occlusion_net.kgnn import heatmaps_to_graph, image_to_roi, roi_to_image
from occaist.models.occlusion_net.stand_in import jitter_boxes
from occaist.utils.io import atomic_path

log = logging.getLogger("occnet_heatmaps")


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
    )


class HeatmapNet(nn.Module):
    """ROI crop ``(N, 3, S, S)`` -> keypoint logits ``(N, K, S/2, S/2)``: three stride-2 stages
    (``w``, ``2w``, ``4w`` channels) and a U-Net decoder back to half the crop's size."""

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 32) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(3, w, 2), _block(w, w))
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w), _block(4 * w, 4 * w)
        )
        self.dec2 = _block(6 * w, 2 * w)
        self.dec1 = nn.Sequential(_block(3 * w, w), _block(w, w))
        self.out = nn.Conv2d(w, num_keypoints, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.out(d1)


def _load(root: Path, names: list[str]) -> tuple[list[Tensor], Tensor, Tensor, Tensor, list]:
    """Images, and per instance: image index, keypoints ``(K, 3)``, hull box and its
    ``(sequence, instance id)``."""
    images, img_idx, kps, boxes, cars = [], [], [], [], []
    for rec in scan_carfusion(root, names, allow_missing=True):
        with Image.open(root / rec.image) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(arr).permute(2, 0, 1))
        for inst in sorted(rec.boxes):
            img_idx.append(len(images) - 1)
            kps.append(rec.keypoints[inst])
            boxes.append(rec.boxes[inst])
            cars.append((rec.sequence, inst))
    kp = torch.as_tensor(np.stack(kps), dtype=torch.float32)
    box = torch.as_tensor(np.stack(boxes), dtype=torch.float32)
    return images, torch.tensor(img_idx), kp, box, cars


def fold_of(cars: list[tuple[str, int]], folds: int, group: str) -> Tensor:
    """Cross-fitting fold ``(N,)`` of each instance: groups (``sequence``: a sequence, ``car``:
    one car in every view, ``instance``: each instance alone) dealt round-robin in order of
    first appearance, so no group straddles two folds."""
    if group not in ("sequence", "car", "instance"):
        raise ValueError(f"group must be sequence, car or instance, got {group!r}")
    if group == "instance":
        return torch.arange(len(cars)) % folds
    keys = [c[0] if group == "sequence" else c for c in cars]
    order = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    if len(order) < folds:
        raise ValueError(f"{len(order)} {group} groups cannot fill {folds} folds")
    return torch.tensor([order[k] % folds for k in keys])


def _crops(images: list[Tensor], idx: Tensor, rois: Tensor, size: int) -> Tensor:
    """RoIAlign crops ``(N, 3, size, size)`` of ``rois`` (image pixels)."""
    out = torch.empty(len(idx), 3, size, size)
    for i in idx.unique().tolist():
        sel = (idx == i).nonzero()[:, 0]
        out[sel] = roi_align(images[i][None], [rois[sel]], size, 1.0, 2, aligned=True)
    return out


def _targets(kps: Tensor, rois: Tensor, res: int) -> Tensor:
    """Flat cell index per keypoint (``-1``: unlabelled or outside the ROI)."""
    uv = image_to_roi(kps[..., :2], rois)
    cell = ((uv + 1) / 2 * res).floor().long()
    inside = ((cell >= 0) & (cell < res)).all(-1) & (kps[..., 2] > 0)
    flat = cell[..., 1] * res + cell[..., 0]
    return torch.where(inside, flat, torch.full_like(flat, -1))


def _batch(images, idx, kps, boxes, args, gen, train: bool):
    rois = jitter_boxes(boxes, args.center_jitter, args.scale_jitter, gen)
    x = _crops(images, idx, rois, args.crop)
    kps = kps.clone()
    if train:
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        mirrored = kps.clone()
        mirrored[..., 0] = rois[:, None, 0] + rois[:, None, 2] - kps[..., 0]
        mirrored = mirrored[:, list(FLIP_PERMUTATION)]
        kps = torch.where(flip[:, None, None], mirrored, kps)
        gain = 1 + args.color_jitter * (2 * torch.rand(len(x), 3, 1, 1, generator=gen) - 1)
        x = (x * gain).clamp(0, 1)
    return x, kps, rois


def train_net(data, args, seed: int, epochs: int | None = None) -> HeatmapNet:
    images, idx, kps, boxes = data[:4]
    epochs = args.epochs if epochs is None else epochs
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = HeatmapNet(width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = epochs * max(1, len(idx) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    res = args.crop // 2
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(idx), generator=gen)
        total = 0.0
        for b in range(0, len(order) - args.batch_size + 1, args.batch_size):
            sel = order[b : b + args.batch_size]
            x, k, rois = _batch(images, idx[sel], kps[sel], boxes[sel], args, gen, train=True)
            target = _targets(k, rois, res)
            logits = net((x - 0.45) / 0.25).flatten(2)  # (B, K, R*R)
            loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, step = total + loss.item(), step + 1
        if epoch % 10 == 0 or epoch == epochs - 1:
            log.info(
                "seed %d epoch %d loss %.3f",
                seed,
                epoch,
                total / max(1, len(order) // args.batch_size),
            )
    return net.eval()


@torch.no_grad()
def graphs(net: HeatmapNet, data, args, seed: int) -> dict[str, Tensor]:
    images, idx, kps, boxes = data[:4]
    gen = torch.Generator().manual_seed(seed)
    rois = jitter_boxes(boxes, args.center_jitter, args.scale_jitter, gen)
    nodes = []
    for b in range(0, len(idx), 64):
        x = _crops(images, idx[b : b + 64], rois[b : b + 64], args.crop)
        nodes.append(heatmaps_to_graph(net((x - 0.45) / 0.25), use_type=False))
    return {"keypoints": kps, "box": boxes, "roi": rois, "nodes": torch.cat(nodes)}


def pck_of(part: dict[str, Tensor], keypoints: list[int], alpha: float = 0.1) -> dict[str, float]:
    pred = roi_to_image(part["nodes"][..., :2], part["roi"])[:, keypoints]
    gt = part["keypoints"][:, keypoints]
    size = (part["box"][:, 2:] - part["box"][:, :2]).amax(-1)[:, None]
    ok = (pred - gt[..., :2]).norm(dim=-1) < alpha * size
    return {
        name: float(ok[gt[..., 2] == code].float().mean()) * 100
        for name, code in (("visible", 2), ("occluded", 1))
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder holding car_<seq>/")
    p.add_argument("--out", type=Path, required=True, help=".pt file of graphs per split")
    p.add_argument("--train", nargs="+", default=["butler", "craig", "fifth", "morewood"])
    p.add_argument("--test", nargs="+", default=["penn1", "penn2"])
    p.add_argument("--crop", type=int, default=64, help="ROI crop side (heatmaps: half)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--folds", type=int, default=3,
        help="cross-fitting of training graphs (0: the test network only, for KGNNs trained on "
        "the stand-in, as experiment=occnet_graph_heatmaps does)",
    )  # fmt: skip
    p.add_argument(
        "--group", default="sequence", choices=["sequence", "car", "instance"],
        help="what a cross-fitting fold keeps together",
    )  # fmt: skip
    p.add_argument(
        "--equal-steps", action=argparse.BooleanOptionalAction, default=True,
        help="cross-fitting networks take as many steps as the test network (more epochs)",
    )  # fmt: skip
    p.add_argument("--train-draws", type=int, default=4, help="box jitters per training graph")
    p.add_argument("--center-jitter", type=float, default=0.05)
    p.add_argument("--scale-jitter", type=float, default=0.1)
    p.add_argument("--color-jitter", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--parts", nargs="+", default=None,
        help="compute only these of test, fold0, fold1, ... (default all); each is kept in "
        "<out>.parts/ and the output is written once every part is there",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    names = ["test"] + [f"fold{f}" for f in range(args.folds)]
    todo = args.parts or names
    unknown = sorted(set(todo) - set(names))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {names}")
    part_dir = Path(f"{args.out}.parts")
    part_dir.mkdir(parents=True, exist_ok=True)
    train = _load(args.root, args.train)
    log.info("%d training instances", len(train[1]))
    evaluated = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    fold = fold_of(train[4], args.folds, args.group) if args.folds else None
    for name in todo:
        start, cpu_start = time.perf_counter(), time.process_time()
        if name == "test":
            test = _load(args.root, args.test)
            full = train_net(train, args, seed=0)
            result = graphs(full, test, args, seed=1)
            log.info(
                "%d test instances, heatmaps PCK@0.1 %s", len(test[1]), pck_of(result, evaluated)
            )
        else:
            f = int(name[4:])
            fit = [t[fold != f] if isinstance(t, Tensor) else t for t in train[:4]]
            held = [t[fold == f] if isinstance(t, Tensor) else t for t in train[:4]]
            if args.folds == 1:  # no cross-fitting: the network of every training instance
                fit = train[:4]
            log.info("fold %d: %d fitted, %d held out", f, len(fit[1]), len(held[1]))
            epochs = args.epochs
            if args.equal_steps:  # as many optimiser steps as the test network
                epochs = round(args.epochs * len(train[1]) / len(fit[1]))
            net = train_net(fit, args, seed=0 if args.folds == 1 else 10 + f, epochs=epochs)
            draws = [
                graphs(net, held, args, seed=100 + 10 * f + d) for d in range(args.train_draws)
            ]
            result = {k: torch.cat([d[k] for d in draws]) for k in draws[0]}
            log.info("fold %d held-out heatmaps PCK@0.1 %s", f, pck_of(result, evaluated))
        seconds = {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start}
        with atomic_path(part_dir / f"{name}.pt") as tmp:
            torch.save({"graphs": result, **seconds}, tmp)
        log.info("part %s: %.0f s (%.0f s of CPU time)", name, seconds["wall_s"], seconds["cpu_s"])
    if not all((part_dir / f"{n}.pt").is_file() for n in names):
        log.info("parts missing in %s: output not written yet", part_dir)
        return
    done = {n: torch.load(part_dir / f"{n}.pt", weights_only=True) for n in names}
    folds = [done[n]["graphs"] for n in names[1:]]
    out = {"test": done["test"]["graphs"]}
    if folds:  # --folds 0: test graphs only (the KGNNs train on the stand-in)
        out["train"] = {k: torch.cat([p[k] for p in folds]) for k in folds[0]}
        log.info("held-out training heatmaps PCK@0.1 %s", pck_of(out["train"], evaluated))
    with atomic_path(args.out) as tmp:
        torch.save(out, tmp)
    log.info(
        "wrote %s; the %d networks took %.0f s (%.0f s of CPU time)", args.out, len(names),
        sum(d["wall_s"] for d in done.values()), sum(d["cpu_s"] for d in done.values()),
    )  # fmt: skip


if __name__ == "__main__":
    main()
