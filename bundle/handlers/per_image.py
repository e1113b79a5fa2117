"""Writes an evaluation's per-image labels and probabilities, so that two models can be compared image by image."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..keys import Keys

__all__ = ["PerImageScores"]

logger = logging.getLogger(__name__)


class PerImageScores:
    """At the end of an evaluation, write ``<output_dir>/per_image.csv``: one row per scored image with its name,
    patient, labels, label mask and the network's probabilities (see :func:`bundle.compare.write_per_image`).

    What :func:`bundle.compare.read_per_image` reads back, and what ``scripts/compare_models.py`` pairs two models
    on (docs/comparing.md): the metrics can be recomputed from it without running the network again. The rows are
    the key metric's (:class:`~bundle.metrics.ClassificationMetrics`, which leaves itself in
    ``engine.state.classification_metric``); their names come from ``records``, the evaluated list in loader order
    (the evaluation loader does not shuffle), less the images the loader could not read
    (``batch["error"]``, :func:`~bundle.engines.trainer.drop_unreadable`).

    Config example (``configs/evaluate.json``)::

        {"_target_": "bundle.handlers.PerImageScores", "output_dir": "@eval_dir",
         "records": "$getattr(@data#splits, @eval_split)"}
    """

    def __init__(self, output_dir: str | os.PathLike, records: Sequence[dict[str, Any]],
                 filename: str = "per_image.csv") -> None:
        self.output_dir, self.records, self.filename = Path(output_dir), list(records), filename
        self._kept: list[int] = []
        self._seen = 0

    @property
    def path(self) -> Path:
        return self.output_dir / self.filename

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._kept, self._seen = [], 0

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch  # the loader's batch, before unreadable images are dropped
        size = len(batch[Keys.IMAGE])
        errors = batch.get(Keys.ERROR) or [""] * size
        self._kept += [self._seen + i for i, error in enumerate(errors) if not error]
        self._seen += size

    def name(self, index: int) -> tuple[str, str]:
        """The image's name and patient: the name a recorded teacher's file knows it by
        (:func:`bundle.distill.recorded.record_id`: its path, or the id of an in-memory image)."""
        from ..distill.recorded import record_id

        if index >= len(self.records):
            return f"#{index}", f"#{index}"
        record = self.records[index]
        name = record_id(record) or f"#{index}"
        return name, str(record.get("patient_id") or name)

    def __call__(self, engine: Engine) -> None:
        from ..compare import write_per_image

        metric = getattr(engine.state, "classification_metric", None)
        if metric is None or not hasattr(metric, "scored_heads"):
            raise RuntimeError("PerImageScores needs bundle.metrics.ClassificationMetrics (or MultiTaskMetrics) as the "
                               "evaluator's key metric")
        if idist.get_world_size() > 1:
            if idist.get_rank() == 0:
                logger.warning("per-image scores are not written by a distributed evaluation (its images are sharded)")
            return
        heads = metric.scored_heads()
        rows = len(next(iter(heads.values()))[0])
        if rows != len(self._kept) or self._seen != len(self.records):
            logger.warning("per-image scores: %d scored rows for %d evaluated of %d records; names by position",
                           rows, len(self._kept), len(self.records))
            self._kept = list(range(rows))
        names = [self.name(i) for i in self._kept]
        write_per_image(self.path, [n for n, _ in names], [p for _, p in names],
                        {head: tuple(torch.as_tensor(a).numpy() for a in arrays[:3]) for head, arrays in heads.items()},
                        {head: arrays[3] for head, arrays in heads.items()})
