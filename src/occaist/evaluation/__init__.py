"""One evaluation place shared by every model (detectron2's evaluator shape).

A LightningModule's ``test_step`` returns ``{"records": [dict, ...]}`` (one plain dict per sample)
and names its evaluator in ``build_evaluator()``; :class:`EvaluationCallback` collects the records
on every rank, gathers them on rank 0, asks the evaluator for a :class:`Report` and writes it
(tables as Markdown / CSV / JSON with baseline rows beside the model's, per-sample CSV files,
figures, a W&B table). The model itself never opens a file.
"""

from occaist.evaluation.base import Evaluator, Report
from occaist.evaluation.callback import EvaluationCallback
from occaist.evaluation.writers import write_report, write_table

__all__ = ["EvaluationCallback", "Evaluator", "Report", "write_report", "write_table"]
