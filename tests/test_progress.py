"""The terminal: one step-bounded bar with an ETA; a config tree without schema noise."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from occaist.callbacks.progress import StepProgressBar
from occaist.utils.config import config_tree_text
from tests.helpers import composed


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Spy(pl.Callback):
    """Records the training bar after every batch (runs after the bar: later in the list)."""

    def __init__(self, bar: StepProgressBar) -> None:
        self.bar = bar
        self.seen: list[tuple[float, float, str]] = []
        self.task_ids: set[int] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        task = self.bar.progress.tasks[self.bar.train_progress_bar_id]
        self.task_ids.add(self.bar.train_progress_bar_id)
        self.seen.append((task.total, task.completed, task.description))


def test_step_bounded_run_has_one_bar_over_all_steps(tmp_path) -> None:
    """Two batches an epoch, 5 steps: one task counting 1..5 of 5 across three epochs."""
    data = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    bar = StepProgressBar()
    spy = _Spy(bar)
    trainer = pl.Trainer(
        max_steps=5,
        callbacks=[bar, spy],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), data)
    assert [(total, done) for total, done, _ in spy.seen] == [(5, k) for k in range(1, 6)]
    assert len(spy.task_ids) == 1
    assert "epoch 2" in spy.seen[-1][2]


def test_config_tree_shows_no_schema_defaults(tmp_path) -> None:
    with composed(["experiment=dpc_demo_cpu"], output_dir=tmp_path) as cfg:
        text = config_tree_text(cfg)
    assert "_recursive_" not in text and "_convert_" not in text
    assert "_partial_: false" not in text
    assert "_partial_: true" in text  # the optimizer partial is meaningful and stays
