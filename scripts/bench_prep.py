"""Benchmark of the AIST real-image preparation (``occaist.prep``).

Measures, in one run (so ratios are comparable on a shared machine):

1. images/s of the whole pipeline with ``provided`` masks, 1 worker vs ``--workers`` workers
   (spawned processes as in prep's default, pool start-up included), and the scaling ratio;
2. Mask R-CNN (ResNet-50 FPN, random weights, CPU) images/s at the configured detector size
   (``min_size`` 800 / ``max_size`` 1024, as ``conf/prep/segmenter/maskrcnn.yaml``).

Synthetic scenes are written to a temporary folder in the Stanford Cars layout (ellipse "cars" on
noise with their masks as ``synthetic/instances.json``, and a few DPC-layout renders for the ratio
fit). Prints medians over ``--repeats``.

    python scripts/bench_prep.py                     # defaults: about a minute on a laptop core
    python scripts/bench_prep.py --images 200 --workers 4 --repeats 3 --maskrcnn-images 4
    python scripts/bench_prep.py --against HEAD~3    # before/after: 1 worker, this tree vs REV

With ``--against REV`` the provided-mask pipeline of this working tree and of commit ``REV``
(its ``src/`` exported with ``git archive``) run alternately in fresh processes on the same scenes,
and the ratio of their median images/s is printed: a before/after figure from one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from occaist.data.coco_rle import encode
from occaist.prep.pipeline import PrepSettings, run_prep
from occaist.prep.segment import MaskRCNNSegmenter

log = logging.getLogger("bench_prep")


def make_scenes(root: Path, n: int, height: int, width: int, seed: int = 0) -> Path:
    """``n`` noise images with one ellipse car each (Stanford Cars layout + instances.json)."""
    rng = np.random.default_rng(seed)
    folder = root / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    (folder / "cars_train").mkdir()
    (folder / "cars_test").mkdir()
    sio.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array(["c", "d"], object)})
    yy, xx = np.mgrid[:height, :width]
    images, annotations, annos = [], [], []
    for i in range(n):
        img = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
        cx, cy = width / 2 + rng.uniform(-20, 20), height / 2 + rng.uniform(-20, 20)
        rx, ry = width * rng.uniform(0.25, 0.4), height * rng.uniform(0.2, 0.35)
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        img[mask] = rng.integers(0, 255, 3)
        name = f"{i + 1:05d}.jpg"
        Image.fromarray(img).save(folder / "cars_train" / name, quality=90)
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
        images.append({"id": i + 1, "file_name": f"cars_train/{name}", "width": width,
                       "height": height})  # fmt: skip
        rle = encode(mask.astype(np.uint8))
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": bbox,
                            "segmentation": rle, "score": 0.99})  # fmt: skip
        annos.append((0, 0, width - 1, height - 1, 1, name))
    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for mat in ("devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat"):
        sio.savemat(folder / mat, {"annotations": np.array(annos, dtype=fields)})
    (folder / "synthetic").mkdir()
    (folder / "synthetic" / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 3, "name": "car"}]}))  # fmt: skip
    renders = root / "shapenet_renders" / "renders"
    ids = [f"m{i}" for i in range(4)]
    for i, mid in enumerate(ids):
        (renders / "02958343" / mid).mkdir(parents=True)
        rgba = np.zeros((128, 128, 4), np.uint8)
        m = ((np.mgrid[:128, :128][1] - 64) / (30 + i)) ** 2 + (
            (np.mgrid[:128, :128][0] - 64) / 20
        ) ** 2 <= 1
        rgba[m] = (80, 80, 200, 255)
        for v in range(5):
            Image.fromarray(rgba).save(renders / "02958343" / mid / f"render_{v}.png")
    (renders / "02958343_train.txt").write_text("\n".join(ids) + "\n")
    return folder


def time_provided(folder: Path, out: Path, workers: int, batch_size: int, ctx: str) -> float:
    s = PrepSettings(
        data_root=str(folder),
        out_dir=str(out),
        splits=["train"],
        workers=workers,
        mp_context=ctx,
        batch_size=batch_size,
        progress=False,
        figures=False,
        segmenter={
            "_target_": "occaist.prep.segment.ProvidedSegmenter",
            "instances_file": str(folder / "synthetic" / "instances.json"),
        },
    )
    s.ratio_fit.renders_root = str(folder.parent / "shapenet_renders")
    start = time.perf_counter()
    run_prep(s)
    return time.perf_counter() - start


def _export_source(rev: str, into: Path) -> Path:
    """``src/`` of commit ``rev`` under ``into`` (``git archive``), for importing it instead."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _time_in_process(source: Path, folder: Path, out: Path, batch_size: int) -> float:
    """Seconds of one 1-worker provided-mask run, importing occaist from ``source``."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--time-provided", str(folder), str(out),
           "--batch-size", str(batch_size)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def compare_against(rev: str, tmp: Path, folder: Path, images: int, batch_size: int,
                    repeats: int) -> None:  # fmt: skip
    """Median images/s of this tree and of ``rev``, alternating, and their ratio."""
    sources = {
        "this tree": Path(__file__).resolve().parents[1] / "src",
        rev: _export_source(rev, tmp / "ref"),
    }
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for r in range(repeats):
        for name, source in sources.items():
            out = tmp / f"cmp_{len(rates[name])}_{r}_{abs(hash(name))}"
            rates[name].append(images / _time_in_process(source, folder, out, batch_size))
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, v in med.items():
        log.info("  %s: %.1f images/s (1 worker, median of %d)", name, v, repeats)
    log.info("  this tree vs %s: x%.2f", rev, med["this tree"] / med[rev])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--time-provided":
        folder, out = Path(sys.argv[2]), Path(sys.argv[3])
        # a warm-up run first: imports (torch for the ratio fit) are not part of the figure
        time_provided(folder, out.with_name(out.name + "_warm"), 1, int(sys.argv[5]), "spawn")
        print(time_provided(folder, out, 1, int(sys.argv[5]), "spawn"))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=96, help="scenes for the provided-mask runs")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640, help="(Stanford Cars averages ~700x480)")
    p.add_argument("--workers", type=int, default=2, help="compared with 1 worker")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--mp-context", default="spawn", help="as prep's mp_context (spawn or fork)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--maskrcnn-images", type=int, default=2, help="timed Mask R-CNN images")
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="torch threads (Mask R-CNN)")
    p.add_argument("--against", metavar="REV", help="also time commit REV's pipeline (1 worker)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bench_prep").setLevel(logging.INFO)
    import torch  # here, not at the top: spawned workers re-import this script's top level

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_scenes(Path(tmp), args.images, args.height, args.width)
        if args.against:
            log.info("provided masks, %dx%d images, %d images, before/after:",
                     args.width, args.height, args.images)  # fmt: skip
            compare_against(args.against, Path(tmp), folder, args.images, args.batch_size,
                            args.repeats)  # fmt: skip
        per_workers: dict[int, list[float]] = {1: [], args.workers: []}
        for r in range(args.repeats):
            for w in per_workers:
                out = Path(tmp) / f"out_{w}_{r}"
                secs = time_provided(folder, out, w, args.batch_size, args.mp_context)
                per_workers[w].append(args.images / secs)
        med = {w: statistics.median(v) for w, v in per_workers.items()}
        log.info("provided masks, %dx%d images, %d images, %s workers, median of %d repeats:",
                 args.width, args.height, args.images, args.mp_context, args.repeats)  # fmt: skip
        for w, v in med.items():
            log.info("  %d worker(s): %.1f images/s (%.1f images/s per worker)", w, v, v / w)
        log.info("  scaling %d vs 1 worker: x%.2f", args.workers, med[args.workers] / med[1])

        if args.maskrcnn_images <= 0:
            return
        seg = MaskRCNNSegmenter(weights=None, device="cpu", min_size=args.min_size,
                                max_size=args.max_size, box_score_thresh=0.5)  # fmt: skip
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
        seg.segment([image], ["warmup"])
        times = []
        for _ in range(args.maskrcnn_images):
            start = time.perf_counter()
            seg.segment([image], ["x"])
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        log.info("Mask R-CNN R50-FPN (random weights), CPU, %d thread(s), min/max size %d/%d: "
                 "%.2f s/image = %.3f images/s (median of %d)", args.threads, args.min_size,
                 args.max_size, t, 1 / t, len(times))  # fmt: skip


if __name__ == "__main__":
    main()
