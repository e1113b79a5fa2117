"""The last line of a run: what happened, where the files went, and the command to run next.

Ignite ends a run with ``Engine run finished. Time taken: ...``, which says nothing a user can act on.
Each handler here replaces it (the engine's own line is filtered out; the time is in ours) with one line,
printed when the engine completes:

* :class:`TrainingSummary` (trainer): the best validation metric and its epoch, the model, its thresholds
  and ``metrics.json``, and the evaluation command for this very run (its configs plus
  ``configs/evaluate.json`` and its overrides);
* :class:`EvaluationSummary` (``configs/evaluate.json``): the key metric with its confidence interval, F1 at
  the model's thresholds and at 0.5, where metrics, report and figures went, and the inference command;
  also leaves out Ignite's "resuming from iteration 0, epoch 0" and MONAI's "Got new best metric", which
  mean nothing in a single evaluation;
* :class:`InferenceSummary` (``configs/inference.json``): how many inputs were predicted, unreadable and
  flagged, where predictions and maps went, and the export command.

``scripts/export_bundle.py`` ends the same way (:func:`next_command` builds the commands).
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["EvaluationSummary", "InferenceSummary", "TrainingSummary", "bundle_command", "python_command",
           "quiet_ignite_run_lines", "shell_quote"]

PREFIX = "cxr-distill:"
_IGNITE_RUN_LINES = ("Engine run resuming from iteration 0, epoch ", "Engine run finished. Time taken")
_EVALUATION_ONLY_LINES = ("Got new best metric of ", "Key metric: ")


def _not_run_line(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_IGNITE_RUN_LINES)


def _not_evaluation_only_line(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_IGNITE_RUN_LINES + _EVALUATION_ONLY_LINES)


def quiet_ignite_run_lines(engine: Engine, evaluation_only: bool = False) -> None:
    """Leave out Ignite's "resuming from iteration 0, epoch 0" (printed for every MONAI run before anything is
    loaded) and "Engine run finished" (a summary line replaces it); ``evaluation_only``: also MONAI's best-metric
    lines, which a single evaluation has no use for."""
    engine.logger.addFilter(_not_evaluation_only_line if evaluation_only else _not_run_line)


def shell_quote(token: str) -> str:
    """``token`` as a POSIX shell word a user can paste: bare when safe, else in double quotes when that needs
    no escape (``"['configs/student.json','configs/evaluate.json']"``), else single-quoted."""
    if token and re.fullmatch(r"[\w@%+=:,./-]+", token):
        return token
    if not re.search(r'["$`\\!]', token):
        return f'"{token}"'
    return shlex.quote(token)


def python_command() -> str:
    """How to call this Python: ``.venv/bin/python`` from the working directory when it is that, else its path."""
    executable = Path(sys.executable)
    try:
        relative = Path(os.path.relpath(executable, Path.cwd()))
    except ValueError:  # another drive (Windows)
        return str(executable)
    return str(relative) if not str(relative).startswith("..") else str(executable)


def _bundle_run_arguments(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``(config files, other arguments)`` of a ``python -m monai.bundle run [id] --config_file ... --k v`` command
    line, or None when this process is not one."""
    if len(argv) < 2 or not str(argv[0]).replace("\\", "/").endswith("monai/bundle/__main__.py") or argv[1] != "run":
        return None
    tokens = list(argv[2:])
    if tokens and not tokens[0].startswith("--"):
        tokens = tokens[1:]  # the run id (training, evaluating ...)
    configs: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--config_file"):
            if "=" in token:
                value = token.split("=", 1)[1]
            else:
                index += 1
                value = tokens[index] if index < len(tokens) else ""
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value
            configs += [str(c) for c in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]
        else:
            rest.append(token)
        index += 1
    return configs, rest


def bundle_command(run_id: str | None, configs: Sequence[str], arguments: Sequence[str] = ()) -> str:
    """``<python> -m monai.bundle run [run_id] --config_file ... <arguments>``, quoted for a shell."""
    config_value = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    words = [python_command(), "-m", "monai.bundle", "run", *([run_id] if run_id else []), "--config_file",
             config_value, *arguments]
    return " ".join(shell_quote(str(w)) for w in words)


def evaluation_command(output_dir: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """The command that evaluates the model this training run made: the run's own configs and overrides, with
    ``configs/evaluate.json`` merged last (``--output_dir`` as given, so the evaluation finds ``model.pt``)."""
    parsed = _bundle_run_arguments(sys.argv if argv is None else argv)
    if parsed is None or not parsed[0]:
        return bundle_command("evaluating", ["configs/student.json", "configs/evaluate.json"],
                              ["--output_dir", str(output_dir)])
    configs, rest = parsed
    evaluate = str(Path(configs[0]).parent / "evaluate.json") if "/" in configs[0] else "evaluate.json"
    return bundle_command("evaluating", [*[c for c in configs if Path(c).name != "evaluate.json"], evaluate], rest)


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f" in {hours} h {minutes:02d} min" if hours else f" in {minutes} min {secs:02d} s" if minutes else \
        f" in {secs} s"


def _emit(line: str) -> None:
    sys.stdout.flush()
    print(f"{PREFIX} {line}", flush=True)


class TrainingSummary:
    """Trainer handler: at the end of training, one line with the best validation metric and its epoch, the files,
    and the command that evaluates the model on the test split.

    Args:
        best_model: the :class:`~bundle.handlers.ModelSaver` of the best model (``@validate#best_model``).
        output_dir: the run's folder (``metrics.json`` of the best epoch is there).

    Config example (``train#handlers``)::

        {"_target_": "bundle.handlers.TrainingSummary", "best_model": "@validate#best_model",
         "output_dir": "@output_dir"}
    """

    def __init__(self, best_model: Any, output_dir: str | os.PathLike) -> None:
        self.best_model, self.output_dir = best_model, Path(output_dir)
        self.line: str | None = None

    def attach(self, engine: Engine) -> None:
        quiet_ignite_run_lines(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from ..thresholds import thresholds_path

        best = self.best_model
        epochs = f"{engine.state.epoch} epoch{'s' if engine.state.epoch != 1 else ''}"
        if best.best_score is None:
            result = f"training finished ({epochs}{_duration(engine.state.times.get('COMPLETED'))}), no validation"
        else:
            result = (f"training finished ({epochs}{_duration(engine.state.times.get('COMPLETED'))}): best validation "
                      f"{best.key_metric} {best.best_score:.4f} at epoch {best.best_epoch}")
        files = [f"model {best.path}"]
        thresholds = thresholds_path(best.path)
        if thresholds.is_file():
            files.append(f"decision thresholds {thresholds}")
        metrics = self.output_dir / "metrics.json"
        if metrics.is_file():
            files.append(f"metrics {metrics}")
        self.line = (f"{result}; {', '.join(files)}; next, evaluate it on the test split: "
                     f"{evaluation_command(self.output_dir)}")
        _emit(self.line)


class EvaluationSummary:
    """Evaluator handler (``configs/evaluate.json``, last): one line with the key metric (and its bootstrap
    interval), F1 at the model's thresholds and at 0.5, the files, and the inference command.

    Args:
        ckpt_path: the evaluated checkpoint.
        eval_dir: where metrics, report and figures went.
        split: the evaluated split's name.
        class_names, image_size, task: the model's, for the inference command.
        key_metric: the metric to report first (``auc_macro``).
        stage: the trained stage (the inference command names the network of another stage than the student).
    """

    def __init__(self, ckpt_path: str | os.PathLike, eval_dir: str | os.PathLike, split: str,
                 class_names: Sequence[str], image_size: int, task: str = "multilabel",
                 key_metric: str = "auc_macro", stage: str = "student") -> None:
        self.stage = stage
        self.ckpt_path, self.eval_dir, self.split = Path(ckpt_path), Path(eval_dir), split
        self.class_names, self.image_size, self.task = [str(c) for c in class_names], int(image_size), task
        self.key_metric = key_metric
        self.line: str | None = None

    def attach(self, engine: Engine) -> None:
        quiet_ignite_run_lines(engine, evaluation_only=True)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        report = getattr(engine.state, "classification_report", None) or {}

        def value(key: str) -> str:
            number = metrics.get(key)
            if not isinstance(number, (int, float)) or math.isnan(number):
                return "n/a"
            low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
            interval = f" [{low:.3f}, {high:.3f}]" if isinstance(low, float) and isinstance(high, float) \
                and not math.isnan(low) else ""
            return f"{number:.3f}{interval}"

        parts = [f"{self.key_metric} {value(self.key_metric)}"]
        if self.task == "multilabel" and "f1_macro" in metrics:
            thresholds = report.get("thresholds") or {}
            at = "0.5" if set(thresholds.values()) <= {0.5} else "the model's thresholds"
            parts.append(f"f1_macro {value('f1_macro')} at {at}")
            if "at0.5/f1_macro" in metrics:
                parts.append(f"{metrics['at0.5/f1_macro']:.3f} at 0.5")
        elif "accuracy" in metrics:
            parts.append(f"accuracy {value('accuracy')}")
        images = report.get("num_samples")
        inference = [python_command(), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                     "--dataset_dir", "<images>", "--ckpt_path", str(self.ckpt_path), "--output_dir",
                     "outputs/inference", "--class_names", repr(self.class_names), "--task", self.task]
        if self.image_size != 128:
            inference += ["--image_size", str(self.image_size)]
        network = "" if self.stage == "student" else \
            f" (and --network_def of the {self.stage} network: configs/inference.json builds the 3-conv student)"
        self.line = (f"evaluation of {self.ckpt_path} on the {self.split} split"
                     f"{f' ({images} images)' if images is not None else ''}"
                     f"{_duration(engine.state.times.get('COMPLETED'))}: {', '.join(parts)}; metrics "
                     f"{self.eval_dir / 'metrics.json'}, report {self.eval_dir / 'report.txt'}, figures "
                     f"{self.eval_dir}/*.png; next, predict on your images: "
                     + " ".join(shell_quote(w) if w != "<images>" else w for w in inference) + network)
        _emit(self.line)


class InferenceSummary:
    """Inference handler (``configs/inference.json``, after the writers): one line with how many inputs were
    predicted, unreadable and flagged, where predictions and saliency maps went, and the export command.

    Args:
        predictions: the run's :class:`~bundle.handlers.PredictionWriter`.
        ckpt_path: the model used.
        output_dir: the run's folder.
        saliency_enabled: whether maps were written (``saliency/``).
    """

    def __init__(self, predictions: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike,
                 saliency_enabled: bool = True) -> None:
        self.predictions, self.ckpt_path, self.output_dir = predictions, Path(ckpt_path), Path(output_dir)
        from .saliency import as_flag

        self.saliency_enabled = as_flag(saliency_enabled)
        self.line: str | None = None

    def attach(self, engine: Engine) -> None:
        quiet_ignite_run_lines(engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        writer = self.predictions
        rows = writer.rows
        ok = [row for row in rows if row["status"] == "ok"]
        bad = len(rows) - len(ok)
        counts: dict[str, int] = {}
        for row in ok:
            for name in row["predicted"]:
                counts[name] = counts.get(name, 0) + 1
        if writer.task == "multilabel":
            shared = len(set(writer.thresholds)) == 1
            rule = f"at {writer.thresholds[0]:g}" if shared else "at the model's thresholds"
            flagged = sum(1 for row in ok if row["predicted"])
            findings = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda x: -x[1]))
            outcome = f"{flagged} with a finding {rule}" + (f" ({findings})" if findings else "")
        else:
            outcome = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda x: -x[1]))
        files = f"predictions {writer.csv_path} (and .json)"
        if self.saliency_enabled and ok:
            files += f", saliency maps {self.output_dir / 'saliency'} (maps.csv)"
        export = [python_command(), "scripts/export_bundle.py", "--ckpt", str(self.ckpt_path), "--out",
                  "outputs/export", "--set", f"class_names={list(writer.class_names)!r}".replace("'", '"'),
                  f"task={writer.task}"]
        self.line = (f"inference{_duration(engine.state.times.get('COMPLETED'))}: {len(ok)} of {len(rows)} input(s) "
                     f"predicted{f', {bad} unreadable (listed below)' if bad else ''}; {outcome}; {files}; "
                     f"next, package the model as a bundle: " + " ".join(shell_quote(w) for w in export))
        _emit(self.line)
