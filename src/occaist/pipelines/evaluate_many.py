"""Evaluate one checkpoint on several dataset roots in one process (one model load per root).

``python -m occaist.pipelines.evaluate_many SPEC.json`` with ``SPEC`` =
``{"ckpt": ..., "roots": {name: root}, "overrides": [...], "per_root_overrides": {name: [...]},
"out_dir": ...}``: for every root, ``eval.yaml`` is composed with ``ckpt_path``, ``data.root`` and
the overrides, and :func:`occaist.tasks.evaluate` writes into ``<out_dir>/<name>/``. This is what
``python eval.py ... data.root=<root>`` does once per root, without paying the start-up each time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from occaist.tasks import evaluate
from occaist.utils.compose import composed
from occaist.utils.logging import get_logger

log = get_logger(__name__)


def evaluate_many(spec: dict) -> None:
    """Run :func:`occaist.tasks.evaluate` for every root of ``spec`` (see module docstring)."""
    out_dir = Path(spec["out_dir"])
    for name, root in spec["roots"].items():
        overrides = [
            f"ckpt_path={spec['ckpt']}",
            f"data.root={root}",
            *spec.get("overrides", []),
            *spec.get("per_root_overrides", {}).get(name, []),
        ]
        log.info("evaluating %s on %s (%s)", spec["ckpt"], name, root)
        with composed(overrides, config_name="eval.yaml", output_dir=out_dir / name) as cfg:
            evaluate(cfg)


if __name__ == "__main__":
    evaluate_many(json.loads(Path(sys.argv[1]).read_text()))
