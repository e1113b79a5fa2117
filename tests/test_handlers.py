"""Handlers one concern each: loss-term means, the loss guard's transform, intervals in any order, console output."""

from __future__ import annotations

import io
import json
import logging
import sys

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from bundle.console import FirstProcessOnly, log_on_first_process_only, progress
from bundle.data.phantoms import make_phantom_datalist
from bundle.handlers import ConfidenceIntervals, LossTermMeans, MetricsJSONWriter, NonFiniteLossGuard
from bundle.handlers.guards import NonFiniteLossError
from bundle.metrics import ClassificationMetrics, bootstrap_intervals


def _trainer(outputs: list[dict]) -> Engine:
    return Engine(lambda engine, batch: outputs[(engine.state.iteration - 1) % len(outputs)])


def test_loss_term_means_are_there_for_handlers_attached_before_them():
    outputs = [{"loss": torch.tensor(3.0), "loss_terms": {"hard": 1.0, "soft": 2.0}},
               {"loss": torch.tensor(5.0), "loss_terms": {"hard": 3.0, "soft": 2.0}},
               {"loss": torch.tensor(0.0), "loss_terms": {}}]  # a batch of unreadable images: no terms
    engine = _trainer(outputs)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))  # listed first
    LossTermMeans().attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    assert seen == [{"loss_mean/hard": 2.0, "loss_mean/soft": 2.0}] * 2  # each term over the iterations with it


def test_non_finite_loss_guard_checks_what_its_output_transform_returns():
    engine = _trainer([{"loss": torch.tensor(1.0), "loss_terms": {"hard": 1.0}, "extra": float("inf")}])
    NonFiniteLossGuard(output_transform=lambda output: {"extra": output["extra"]}).attach(engine)
    with pytest.raises(NonFiniteLossError, match=r"iteration 1: extra=inf"):
        engine.run([0], max_epochs=1)
    default = _trainer([{"loss": torch.tensor(float("nan")), "loss_terms": {"hard": float("nan"), "soft": 0.5}}])
    NonFiniteLossGuard().attach(default)
    with pytest.raises(NonFiniteLossError, match=r"hard=nan, loss=nan"):
        default.run([0], max_epochs=1)
    fine = _trainer([{"loss": torch.tensor(1.0), "loss_terms": {"hard": 1.0}}])
    NonFiniteLossGuard(output_transform=lambda output: output["loss"]).attach(fine)
    fine.run([0], max_epochs=1)  # a tensor is accepted, as by Ignite's TerminateOnNan


@pytest.mark.parametrize("writer_first", [True, False])
def test_confidence_intervals_reach_the_report_whatever_the_handler_order(tmp_path, writer_first):
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(np.eye(2)[rng.integers(0, 2, 40)], dtype=torch.float32)
    logits = 2 * labels + torch.as_tensor(rng.normal(size=(40, 2)), dtype=torch.float32)
    batches = [{"pred": logits[i:i + 10], "label": labels[i:i + 10]} for i in range(0, 40, 10)]
    evaluator = Engine(lambda engine, batch: batch)
    ClassificationMetrics("multiclass", ["Normal", "Pneumonia"]).attach(evaluator, "auc_macro")
    handlers = [MetricsJSONWriter(str(tmp_path)), ConfidenceIntervals(resamples=50)]
    for handler in handlers if writer_first else handlers[::-1]:
        handler.attach(evaluator)
    evaluator.run(batches, max_epochs=1)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["auc_macro_ci_low"] <= metrics["auc_macro"] <= metrics["auc_macro_ci_high"]
    report = (tmp_path / "report.txt").read_text()
    assert "Pneumonia" in report and "95% bootstrap confidence intervals (50 resamples of the 40 images)" in report


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_phantom_generation_shows_progress_on_a_terminal_only(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    make_phantom_datalist(num_images=3, image_size=16)
    assert "generating 3 phantoms" in terminal.getvalue() and "/3 " in terminal.getvalue()
    redirected = io.StringIO()  # a log file, a pipe, CI
    monkeypatch.setattr(sys, "stderr", redirected)
    make_phantom_datalist(num_images=3, image_size=16)
    assert redirected.getvalue() == ""
    monkeypatch.setenv("RANK", "1")  # a second torchrun process draws no bar even on a terminal
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    make_phantom_datalist(num_images=3, image_size=16)
    assert terminal.getvalue() == ""


def test_bootstrap_shows_progress_when_asked_or_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bootstrap_intervals(lambda rows: {"auc_macro": float(np.mean(rows))}, 10, ("auc_macro",), resamples=20,
                        progress=None)
    assert "bootstrap" in terminal.getvalue() and "/20 " in terminal.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    bootstrap_intervals(lambda rows: {"auc_macro": 0.5}, 10, ("auc_macro",), resamples=20)  # default: no bar
    assert quiet.getvalue() == ""
    assert list(progress(range(3), "x", enabled=False)) == [0, 1, 2]


def test_other_processes_keep_only_warnings_and_errors(monkeypatch):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_handlers.rank")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)  # its own level: the handler filter alone decides
    root_level = logging.getLogger().level
    try:
        monkeypatch.setenv("RANK", "1")
        log_on_first_process_only()
        assert any(isinstance(f, FirstProcessOnly) for f in handler.filters)
        logger.warning("a warning")
        logger.error("an error")
        logger.info("Epoch[1] Complete")
        assert stream.getvalue().splitlines() == ["a warning", "an error"]
        monkeypatch.setenv("RANK", "0")  # the same filter passes everything on the first process
        logger.info("Epoch[1] Complete")
        assert stream.getvalue().splitlines()[-1] == "Epoch[1] Complete"
    finally:
        logger.removeHandler(handler)
        loggers = [logging.getLogger(), *(item for item in logging.root.manager.loggerDict.values()
                                          if isinstance(item, logging.Logger))]
        for h in (h for item in loggers for h in item.handlers):
            h.filters = [f for f in h.filters if not isinstance(f, FirstProcessOnly)]
        logging.getLogger().setLevel(root_level)


def test_saliency_writer_checks_its_layer_only_when_enabled(tmp_path):
    """Recording another network's predictions with --saliency_enabled False (docs/recorded_teacher.md): the
    default saliency layer of the 3-conv student need not exist in it."""
    from monai.networks.nets import DenseNet121

    from bundle.handlers import SaliencyWriter

    network = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3)
    writer = SaliencyWriter(network, "conv3", tmp_path, ["a", "b", "c"], enabled=False)
    assert writer.cam is None
    with pytest.raises(ValueError, match="DenseNet121 has no module 'conv3'"):
        SaliencyWriter(network, "conv3", tmp_path, ["a", "b", "c"])
