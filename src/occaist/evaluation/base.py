"""The evaluator interface: ``reset`` / ``process`` / ``evaluate``, and the report it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    """What an evaluation produced; :func:`occaist.evaluation.write_report` writes it.

    Attributes:
        summary: scalar results and their context (split, root, counts), written as
            ``summary_<split>.json`` / ``.csv``.
        tables: name -> rows; every row is a dict with the same keys. A method comparison puts the
            model's rows and its baselines' rows in one table (column ``method``), written as
            ``<name>.md`` / ``.csv`` / ``.json``.
        samples: name -> per-sample rows, written as ``<name>.csv`` and logged as a W&B table.
        figures: name -> matplotlib figure, written as ``<name>.png``.
        documents: name -> JSON-serialisable object, written as ``<name>.json``.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    """Collects per-sample records and turns them into a :class:`Report`.

    Subclasses implement :meth:`evaluate`; ``process`` keeps plain-dict records so that they can be
    gathered across ranks with ``all_gather_object``. ``unique_key`` names the record field that
    identifies a sample: the gathered records are de-duplicated on it (a ``DistributedSampler``
    pads the last batch with repeats).
    """

    unique_key: str | None = None

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget the records of the previous evaluation."""
        self.records = []

    def process(self, records: list[dict[str, Any]]) -> None:
        """Keep the records of one batch."""
        self.records.extend(records)

    def deduplicated(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` without repeats of ``unique_key`` (first occurrence kept)."""
        if self.unique_key is None:
            return records
        seen: set[Any] = set()
        out = []
        for rec in records:
            if rec[self.unique_key] not in seen:
                seen.add(rec[self.unique_key])
                out.append(rec)
        return out

    def evaluate(self, records: list[dict[str, Any]], context: dict[str, Any]) -> Report:
        """The report for ``records`` (all ranks' records, de-duplicated).

        ``context`` holds the logged test metrics (``metrics``, names without the ``test/``
        prefix) and the datamodule's split and root (``split``, ``root``).
        """
        raise NotImplementedError
