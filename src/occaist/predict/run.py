"""The predict loop and its command line (``python predict.py`` / ``python -m occaist.predict``).

``predict(cfg)`` lists the images of ``cfg.input`` (at most ``cfg.limit``), picks the predictor
of ``cfg.model._target_``, loads ``cfg.ckpt_path`` into it, and runs batches of ``batch_size``
images on ``device`` behind a progress bar. Unreadable files are logged, counted and listed in
``summary.json``; they never stop the run.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from occaist.cli import clear_errors
from occaist.schemas import register_schemas
from occaist.utils.logging import get_logger

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else as ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} asked for, but CUDA is not available here")
    return device


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict on every image of ``cfg.input`` and write the results under ``cfg.output``.

    Returns the summary also written to ``<output>/summary.json``: counts (``listed``,
    ``predicted``, ``skipped``), the unreadable files with their reason, and the result files.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from occaist.predict.base import predictor_for
    from occaist.predict.config import check_options
    from occaist.predict.inputs import InputDataset, list_inputs
    from occaist.utils.io import write_json_atomic

    if cfg.extras.get("num_threads"):
        torch.set_num_threads(int(cfg.extras.num_threads))
    opts = check_options(cfg)
    device = resolve_device(opts.device)
    output = Path(opts.output)
    files = list_inputs(opts.input, opts.limit)
    predictor_cls = predictor_for(cfg.model._target_)
    log.info("loading %s from %s on %s", predictor_cls.name, opts.ckpt_path, device)
    predictor = predictor_cls(predictor_cls.load(cfg, device), cfg, output, device)
    loader = DataLoader(
        InputDataset(files, predictor.prepare_fn()),
        batch_size=opts.batch_size,
        num_workers=opts.num_workers,
        collate_fn=list,
    )
    skipped: list[dict[str, str]] = []
    predicted = 0
    seconds = 0.0
    bar = tqdm(total=len(files), unit="img", desc=predictor.name, disable=not opts.progress)
    for batch_idx, batch in enumerate(loader):
        good = [item for item in batch if item.ok]
        for item in batch:
            if not item.ok:
                skipped.append({"path": str(item.file.path), "reason": str(item.reason)})
                log.warning("skipped unreadable input %s (%s)", item.file.path, item.reason)
        if good:
            start = perf_counter()
            results = predictor.predict(good, batch_idx)
            elapsed = perf_counter() - start
            seconds += elapsed
            for item, result in zip(good, results, strict=True):
                item.meta["time_s"] = elapsed / len(good)
                predictor.write(item, result)
            predicted += len(good)
        bar.update(len(batch))
    bar.close()
    summary = {
        "model": predictor.name,
        "target": str(cfg.model._target_),
        "checkpoint": opts.ckpt_path,
        "input": opts.input,
        "device": str(device),
        "listed": len(files),
        "predicted": predicted,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "seconds_in_model": round(seconds, 3),
        "files": predictor.finish(),
    }
    write_json_atomic(output / "summary.json", summary)
    reasons = ", ".join(f"{Path(s['path']).name} ({s['reason']})" for s in skipped)
    log.info(
        "predicted %d of %d images into %s; skipped %d unreadable%s",
        predicted,
        len(files),
        output,
        len(skipped),
        f": {reasons}" if skipped else "",
    )
    return summary


register_schemas()


@hydra.main(version_base="1.3", config_path="pkg://occaist.conf", config_name="predict.yaml")
@clear_errors
def main(cfg: DictConfig) -> None:
    """``python predict.py experiment=<exp> ckpt_path=<ckpt> input=<images> output=<dir>``."""
    predict(cfg)
