"""The preparation run: list -> decode -> segment -> filter -> normalise -> commit -> aggregate.

Robustness contract:

* **Per-image commits.** All outputs of one source image (its PNGs, then its record
  ``.prep/records/<hh>/<key>.json``) are written atomically; the record is written last and is
  what marks the image done. A run killed anywhere leaves at most hidden temporary files (removed
  at the next start) and outputs of an uncommitted image, which the rerun rewrites byte for byte.
* **Deterministic per image.** Every random choice (odd square padding, sampled ratio, 80/20
  split) comes from a generator seeded with ``(seed, image key, instance)``, so results depend
  neither on the order, the number of workers nor the shard. Images are segmented in fixed
  chunks of the shard's listing (``batch_size``), so a batched detector sees the same batches on
  a rerun.
* **Shards.** ``shard=i/n`` takes every n-th image starting at i; any process that finds all
  records present writes the aggregate files (``manifest.csv``, ``rejections.csv``,
  ``report.json``, ``figures/``), so the last shard to finish completes the output.
* **Bad input never aborts.** Unusable files, and images a segmenter fails on because of bad
  data, are committed as records with their reason (counted in ``report.json``).
* **Pinned settings.** Output-relevant settings live in ``.prep/settings.json``; resuming with
  different ones is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occaist.data.common import warn_if_synthetic
from occaist.data.image_files import CarImageRecord, dataset_folder, read_image_rgb
from occaist.data.rgba import (
    car_to_frame_ratio,
    color_correct,
    pad_to_ratio,
    pad_to_square,
    resize_rgba,
)
from occaist.prep.filters import (
    CLEANING_STAGE,
    CandidateView,
    as_dict,
    check_candidate,
    check_grayscale,
)
from occaist.prep.ratio_fit import load_or_fit, sample_ratio
from occaist.prep.records import (
    OUTPUT_SPLITS,
    RUNTIME_ONLY,
    STATE_DIR,
    PrepSettings,
    flat_key,
    record_path,
)
from occaist.prep.report import aggregate
from occaist.prep.segment import Candidate, Segmenter
from occaist.utils.errors import SettingsMismatchError
from occaist.utils.io import atomic_path, write_json_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

Hook = Callable[[str, str], None]


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in str(shard).split("/"))
    except ValueError as err:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from err
    if not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n")
    return i, n


def stable_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator determined by ``seed`` and ``parts`` only (not by order or process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


# ---- one image ---------------------------------------------------------------------------------


@dataclass
class _Context:
    settings: PrepSettings
    folder: Path
    out: Path
    fit: dict[str, Any]


def _clip_box(box: Sequence[float], h: int, w: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))


def _crop_rgba(rgb: np.ndarray, mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The RGBA segment inside the (outward-rounded) box: RGB where the mask is, alpha = mask."""
    x0, y0 = math.floor(box[0]), math.floor(box[1])
    x1, y1 = math.ceil(box[2]), math.ceil(box[3])
    inside = mask[y0:y1, x0:x1, None]  # (h, w, 1) bool
    # RGB zeroed where alpha is 0, as clear_background would (a multiply, not a masked write)
    return np.concatenate([rgb[y0:y1, x0:x1] * inside, inside.astype(np.uint8) * 255], -1)


def _normalise(
    ctx: _Context, rgba: np.ndarray, key: str, instance: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Square padding, ratio padding, resize, colour correction (thesis 3.2.1, 4.1.1.1)."""
    s = ctx.settings
    rng = stable_rng(s.seed, key, instance, "normalise")
    square, pad_sq = pad_to_square(rgba, rng)
    ratio = sample_ratio(ctx.fit, rng, s.ratio_fit.max_draws)
    padded, pad_r = pad_to_ratio(square, ratio)
    square_ratio = car_to_frame_ratio(square[..., 3])
    out = resize_rgba(padded, s.normalize.size)
    if s.normalize.color_correct:
        out = color_correct(out)
    pad = pad_sq + pad_r
    info = {
        "ratio_sampled": ratio,
        "ratio_after": car_to_frame_ratio(out[..., 3]),
        "ratio_reached": bool(square_ratio > ratio),
        "pad": [pad.top, pad.bottom, pad.left, pad.right],
    }
    return out, info


def _png_bytes(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _process_candidate(
    ctx: _Context, rec: CarImageRecord, rgb: np.ndarray, cand: Candidate
) -> tuple[dict[str, Any], tuple[Path, bytes] | None]:
    h, w = rgb.shape[:2]
    box = _clip_box(cand.box, h, w)
    mask = np.asarray(cand.mask, dtype=bool)
    entry: dict[str, Any] = {
        "instance": cand.instance,
        "box": list(box),
        "score": cand.score,
        "label": cand.label,
        "mask_area": int(mask.sum()),
        "extra": cand.extra,
    }
    view = CandidateView(cand.label, cand.score, box, mask)
    failed, _ = check_candidate(view, ctx.settings.filters)
    segment = None
    if failed is None or failed.stage == CLEANING_STAGE:
        # passed the thesis 3.1 filters: its raw segment is in Fig. 3.10's "real" histogram
        segment = _crop_rgba(rgb, mask, box)
        entry["ratio_before"] = car_to_frame_ratio(segment[..., 3])
    if failed is not None:
        entry.update(decision="rejected", verdict=as_dict(failed))
        return entry, None
    out_id = f"{flat_key(rec.key)}_{cand.instance:02d}"
    u = stable_rng(ctx.settings.seed, rec.key, cand.instance, "split").random()
    split = OUTPUT_SPLITS[0] if u < ctx.settings.train_fraction else OUTPUT_SPLITS[1]
    image, info = _normalise(ctx, segment, rec.key, cand.instance)
    entry.update(decision="accepted", id=out_id, split=split, **info)
    return entry, (ctx.out / split / f"{out_id}.png", _png_bytes(image))


def _commit(ctx: _Context, rec: CarImageRecord, record: dict[str, Any], files, hook) -> None:
    for path, data in files:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    if hook is not None:
        hook("outputs_written", rec.key)
    write_json_atomic(record_path(ctx.out, rec.key), record)
    if hook is not None:
        hook("committed", rec.key)


#: Errors a segmenter raises on bad *data* (a malformed mask in a side file, an image it cannot
#: take): the image is recorded as unusable and the run goes on. Anything else (out of memory,
#: a missing weights file) stops the run, so that a rerun retries the images.
_DATA_ERRORS = (ValueError, KeyError, TypeError, IndexError)


def _segment(
    segmenter: Segmenter,
    to_segment: Sequence[tuple[CarImageRecord, np.ndarray]],
    records: dict[str, dict[str, Any]],
) -> list[list[Candidate] | None]:
    """Segment the batch; if it fails on bad data, retry image by image and record failures."""
    sources = [records[r.key]["source"] for r, _ in to_segment]
    try:
        return segmenter.segment([rgb for _, rgb in to_segment], sources)
    except _DATA_ERRORS:
        log.warning("segmenting a batch failed on bad data; retrying image by image")
    results: list[list[Candidate] | None] = []
    for (rec, rgb), source in zip(to_segment, sources, strict=True):
        try:
            results.append(segmenter.segment([rgb], [source])[0])
        except _DATA_ERRORS as err:
            log.warning("%s: segmentation failed (%s: %s)", source, type(err).__name__, err)
            records[rec.key].update(status="unusable", reason="segmentation_failed")
            results.append(None)
    return results


def process_chunk(
    ctx: _Context, segmenter: Segmenter, chunk: Sequence[CarImageRecord], hook: Hook | None = None
) -> int:
    """Decode, segment, filter, normalise and commit a chunk of images; returns images done."""
    s = ctx.settings
    records: dict[str, dict[str, Any]] = {}
    to_segment: list[tuple[CarImageRecord, np.ndarray]] = []
    for rec in chunk:
        source = Path(rec.path).relative_to(ctx.folder).as_posix()
        record: dict[str, Any] = {"key": rec.key, "source": source, "candidates": []}
        decoded = read_image_rgb(rec.path, s.min_image_side)
        record["notes"] = decoded.notes
        if decoded.rgb is None:
            record.update(status="unusable", reason=decoded.reason)
        else:
            gray = check_grayscale(decoded.rgb, s.filters)
            if gray is not None:
                record.update(status="grayscale", reason="grayscale", verdict=as_dict(gray))
            else:
                record.update(status="segmented", reason=None)
                to_segment.append((rec, decoded.rgb))
        records[rec.key] = record
    results = _segment(segmenter, to_segment, records)
    files_by_key: dict[str, list[tuple[Path, bytes]]] = {}
    for (rec, rgb), cands in zip(to_segment, results, strict=True):
        if cands is None:
            continue
        files: list[tuple[Path, bytes]] = []
        for cand in cands:
            entry, file = _process_candidate(ctx, rec, rgb, cand)
            records[rec.key]["candidates"].append(entry)
            if file is not None:
                files.append(file)
        files_by_key[rec.key] = files
    for rec in chunk:
        _commit(ctx, rec, records[rec.key], files_by_key.get(rec.key, []), hook)
    return len(chunk)


# ---- the run -----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _build_segmenter(node: Any) -> Segmenter:
    import hydra

    return hydra.utils.instantiate(node)


def _worker_init(ctx: _Context, segmenter_node: Any) -> None:
    _WORKER["ctx"] = ctx
    _WORKER["segmenter"] = _build_segmenter(segmenter_node)
    torch = sys.modules.get("torch")  # imported only by segmenters that need it
    if torch is not None:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.settings.workers))


def _worker_chunk(chunk: list[CarImageRecord]) -> int:
    return process_chunk(_WORKER["ctx"], _WORKER["segmenter"], chunk)


def _output_settings(s: PrepSettings) -> dict[str, Any]:
    d = asdict(s)
    for k in RUNTIME_ONLY:
        d.pop(k)
    return d


def _check_settings(out: Path, s: PrepSettings) -> None:
    """Refuse to resume ``out`` with other output settings once any image was committed.

    Settings recorded by a run that committed nothing (it failed at listing, at the ratio fit)
    lock nothing: the corrected rerun replaces them.
    """
    path = out / STATE_DIR / "settings.json"
    current = json.loads(json.dumps(_output_settings(s), sort_keys=True, default=str))
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous == current:
            return
        committed = any((out / STATE_DIR / "records").rglob("*.json"))
        if committed:
            diff = sorted(
                k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
            )
            raise SettingsMismatchError(
                f"{out} was prepared with different settings ({', '.join(diff)}); resuming would "
                f"mix outputs. Use a new out_dir, or delete {out} to start over."
            )
        log.info("%s: no image committed under the previous settings; replacing them", out)
    write_json_atomic(path, current)


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the hidden ``.<name>.*.tmp*`` files a killed run may leave behind."""
    for tmp in out.rglob(".*.tmp*"):
        if tmp.is_file():
            tmp.unlink()


def _chunks(items: Sequence[CarImageRecord], size: int) -> Iterator[list[CarImageRecord]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def run_prep(settings: PrepSettings, hook: Hook | None = None) -> dict[str, Any] | None:
    """Prepare the real domain; returns the report when the output is complete, else None.

    Args:
        settings: validated settings (see :class:`PrepSettings`).
        hook: test hook ``hook(event, key)`` called in-process (``workers == 1``) after an
            image's outputs are written (``outputs_written``) and after its commit
            (``committed``); raising from it simulates a kill at that point.
    """
    s = settings
    shard_i, shard_n = parse_shard(s.shard)
    folder = dataset_folder(s.data_root)
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, s)
    _remove_stale_temporaries(out)
    fit = load_or_fit(
        out / "ratio_fit.json",
        s.ratio_fit.renders_root,
        s.ratio_fit.split,
        s.ratio_fit.max_images,
        s.ratio_fit.file,
    )
    warn_if_synthetic(folder)
    from occaist.data.stanford_cars import list_images

    listing = list_images(folder, s.splits)
    if s.max_images is not None:
        listing = listing[: s.max_images]
    mine = listing[shard_i::shard_n]
    chunks = [c for c in _chunks(mine, s.batch_size) if not all(
        record_path(out, r.key).is_file() for r in c
    )]  # fmt: skip
    todo = sum(len(c) for c in chunks)
    log.info(
        "prep shard %d/%d: %d images, %d to do in %d chunks, %d workers",
        shard_i, shard_n, len(mine), todo, len(chunks), s.workers,
    )  # fmt: skip
    ctx = _Context(s, folder, out, fit)
    with _progress(s.progress, todo) as advance:
        if s.workers <= 1:
            segmenter = _build_segmenter(s.segmenter)
            for chunk in chunks:
                advance(process_chunk(ctx, segmenter, chunk, hook))
        else:
            from omegaconf import OmegaConf

            node = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(s.segmenter)))
            with ProcessPoolExecutor(
                max_workers=s.workers,
                mp_context=mp.get_context(s.mp_context),
                initializer=_worker_init,
                initargs=(ctx, node),
            ) as pool:
                for done in pool.map(_worker_chunk, chunks):
                    advance(done)
    missing = [r.key for r in listing if not record_path(out, r.key).is_file()]
    if missing:
        log.info(
            "%d images of other shards not done yet; aggregate files not written", len(missing)
        )
        return None
    return aggregate(out, listing, fit, s)


class _progress:
    """A rich progress bar over images (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._bar.__enter__()
        task = self._bar.add_task("prep images", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
