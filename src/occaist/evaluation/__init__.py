"""One evaluation place shared by every model (detectron2's evaluator shape).

A LightningModule's ``test_step`` returns ``{"records": [dict, ...]}`` (one plain dict per sample)
and names its evaluator in ``build_evaluator()``; :class:`EvaluationCallback` collects the records
on every rank, gathers them on rank 0, asks the evaluator for a :class:`Report` and writes it
(tables as Markdown / CSV / JSON with baseline rows beside the model's, per-sample CSV files,
figures, a W&B table). The model itself never opens a file.
"""

from occaist._lazy import lazy_getattr

__all__ = ["EvaluationCallback", "Evaluator", "Report", "write_report", "write_table"]
# lazy: the writers serve torch-free code too (the preparation's workers)
__getattr__ = lazy_getattr(
    __name__,
    {
        "EvaluationCallback": "occaist.evaluation.callback",
        "Evaluator": "occaist.evaluation.base",
        "Report": "occaist.evaluation.base",
        "write_report": "occaist.evaluation.writers",
        "write_table": "occaist.evaluation.writers",
    },
)
