"""The callback that drives a model's evaluator in the test loop and writes its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from occaist.evaluation.base import Evaluator
from occaist.evaluation.writers import write_report
from occaist.utils.logging import RankedLogger

log = RankedLogger(__name__)


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's records, concatenated in rank order (a no-op in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return records
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, records)
    return [rec for part in parts for rec in part]


class EvaluationCallback(pl.Callback):
    """Feeds ``test_step``'s ``{"records": [...]}`` to the module's evaluator; writes on rank 0.

    The module names its evaluator with ``build_evaluator()`` (a module without one is left
    alone). After the test loop (``on_test_end``, once the module has logged its torchmetrics)
    the records of all ranks are gathered, the evaluator builds a report with the logged
    ``test/*`` metrics as context, and rank 0 writes it under ``out_dir`` and logs each
    per-sample list as a W&B table when a W&B logger is attached.

    Args:
        out_dir: folder of the report (``None``: compute and log, write nothing).
    """

    def __init__(self, out_dir: str | None = None) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.evaluator: Evaluator | None = None
        self.last_report: Any = None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        build = getattr(pl_module, "build_evaluator", None)
        self.evaluator = build() if callable(build) else None
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.evaluator is not None and isinstance(outputs, dict) and "records" in outputs:
            self.evaluator.process(outputs["records"])

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.evaluator is None:
            return
        records = self.evaluator.deduplicated(gather_records(self.evaluator.records))
        if not trainer.is_global_zero:
            return
        hp_data = getattr(getattr(trainer, "datamodule", None), "hparams", {})
        context = {
            "metrics": {
                key.removeprefix("test/"): float(value)
                for key, value in trainer.callback_metrics.items()
                if key.startswith("test/") and getattr(value, "numel", lambda: 1)() == 1
            },
            "split": str(hp_data.get("test_split", "test")),
            "root": str(hp_data.get("root", "")),
        }
        report = self.evaluator.evaluate(records, context)
        self.last_report = report
        self._log_tables(trainer, report)
        if self.out_dir:
            write_report(report, self.out_dir, context["split"])
            log.info(
                "evaluation (%s, %d records) written to %s",
                context["split"],
                len(records),
                Path(self.out_dir),
            )

    @staticmethod
    def _log_tables(trainer: pl.Trainer, report: Any) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            for name, rows in {**report.tables, **report.samples}.items():
                if rows:
                    columns = list(rows[0].keys())
                    data = [[_plain(row.get(c)) for c in columns] for row in rows]
                    logger.log_table(key=f"eval/{name}", columns=columns, data=data)


def _plain(value: Any) -> Any:
    """A value W&B tables accept (lists become strings)."""
    return str(value) if isinstance(value, (list, tuple, dict)) else value
