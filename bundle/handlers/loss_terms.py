"""Logs every named loss term: each iteration to TensorBoard, each epoch's mean to the run log and metrics."""

from __future__ import annotations

from ignite.engine import Engine, Events

from ..keys import Keys

__all__ = ["LossTermsLogger"]


class LossTermsLogger:
    """Writes ``engine.state.output["loss_terms"]`` as ``loss/<term>`` scalars.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with
            ``add_scalar``); None writes only to ``engine.state.metrics``-like history.
        interval: log every ``interval`` iterations.

    The running mean of each term over the epoch is kept in
    ``engine.state.loss_term_means``, and at the end of the epoch in
    ``engine.state.metrics["loss_mean/<term>"]``, where epoch-level trackers (MONAI's
    ``MLFlowHandler`` with ``--tracking mlflow``, listed after this handler) find it.
    """

    def __init__(self, summary_writer=None, interval: int = 1) -> None:
        self.writer = summary_writer
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self._log)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._summarise)

    def _reset(self, engine: Engine) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        engine.state.loss_term_means = {}

    def _log(self, engine: Engine) -> None:
        terms = engine.state.output.get(Keys.LOSS_TERMS, {}) if isinstance(engine.state.output, dict) else {}
        self._count += 1
        for name, value in terms.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
            if self.writer is not None:
                self.writer.add_scalar(f"loss/{name}", value, engine.state.iteration)
        engine.state.loss_term_means = {name: total / self._count for name, total in self._sums.items()}

    def _summarise(self, engine: Engine) -> None:
        engine.state.metrics.update({f"loss_mean/{name}": value for name, value in engine.state.loss_term_means.items()})
        means = ", ".join(f"{name}={value:.4f}" for name, value in engine.state.loss_term_means.items())
        engine.logger.info(f"Epoch[{engine.state.epoch}] loss terms (epoch mean): {means}")
