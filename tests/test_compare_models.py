"""docs/comparing.md: two saved models evaluated with configs/evaluate.json, then compared image by image by
scripts/compare_models.py (the paired bootstrap interval and DeLong's test)."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pandas as pd
import pytest

from bundle.compare import macro_auc, read_per_image
from bundle.data import CXRDataError
from conftest import REPO_ROOT, run_bundle

TINY = {"dataset": "synthetic", "dataset_options": {"num_images": 40, "source_size": 64}, "image_size": 32,
        "batch_size": 8, "num_workers": 0, "device": "cpu", "bootstrap_resamples": 20}


def _compare_models():
    spec = importlib.util.spec_from_file_location("compare_models", REPO_ROOT / "scripts" / "compare_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_saved_models_are_compared_on_the_same_images(tmp_path, capsys):
    """As docs/comparing.md: train two models (here 1 and 2 epochs on phantoms), evaluate each with
    configs/evaluate.json (which writes eval/per_image.csv), compare them with scripts/compare_models.py."""
    for name, epochs in (("baseline", 1), ("distilled", 2)):
        run_bundle("configs/student.json", "training", tmp_path / name, max_epochs=epochs, **TINY)
        run_bundle(["configs/student.json", "configs/evaluate.json"], "evaluating", tmp_path / name, **TINY)
    evaluated = {name: json.loads((tmp_path / name / "eval" / "metrics.json").read_text())
                 for name in ("baseline", "distilled")}
    table = pd.read_csv(tmp_path / "distilled" / "eval" / "per_image.csv")
    assert len(table) == evaluated["distilled"]["num_samples"] and list(table.columns[:2]) == ["image", "patient_id"]
    for name, metrics in evaluated.items():  # the file holds what the metrics were computed from
        scores = read_per_image(tmp_path / name / "eval")
        assert macro_auc(scores.labels, scores.mask, scores.probs)[0] == pytest.approx(metrics["auc_macro"])

    out = tmp_path / "comparison.json"
    code = _compare_models().main(["--a", str(tmp_path / "distilled" / "eval"), "--b", str(tmp_path / "baseline" / "eval"),
                                   "--names", "distilled", "baseline", "--resamples", "200", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    difference = evaluated["distilled"]["auc_macro"] - evaluated["baseline"]["auc_macro"]
    assert result["images"] == len(table)
    assert result["bootstrap"]["difference"] == pytest.approx(difference)
    assert result["bootstrap"]["ci_low"] <= difference <= result["bootstrap"]["ci_high"]
    assert result["delong"]["macro"]["difference"] == pytest.approx(difference)
    assert 0.0 <= result["delong"]["macro"]["p"] <= 1.0
    printed = capsys.readouterr().out
    assert "| paired bootstrap over images (200 draws, by patient) |" in printed
    assert re.search(r"The 95% paired interval (excludes|includes) zero", printed)

    # a model's several runs (seeds) are averaged: the same run twice is the run
    twice = _compare_models().main(["--a", str(tmp_path / "distilled" / "eval"), str(tmp_path / "distilled" / "eval"),
                                    "--b", str(tmp_path / "baseline" / "eval"), "--resamples", "50",
                                    "--out", str(tmp_path / "twice.json")])
    assert twice == 0
    assert json.loads((tmp_path / "twice.json").read_text())["bootstrap"]["difference"] == pytest.approx(difference)

    # a folder without per-image scores is a data error naming it
    with pytest.raises(CXRDataError, match="no per-image scores"):
        _compare_models().main(["--a", str(tmp_path / "distilled"), "--b", str(tmp_path / "baseline" / "eval")])


def test_models_of_other_data_sets_are_refused(tmp_path):
    from bundle.compare import write_per_image

    for name, labels in (("one", [[1.0], [0.0], [1.0]]), ("other", [[0.0], [1.0], [0.0]])):
        array = np.asarray(labels)
        write_per_image(tmp_path / name / "per_image.csv", ["a", "b", "c"], ["a", "b", "c"],
                        {"": (array, np.ones_like(array), np.asarray([[0.2], [0.5], [0.9]]))}, {"": ["Mass"]})
    with pytest.raises(CXRDataError, match="labels differ"):
        _compare_models().main(["--a", str(tmp_path / "one"), "--b", str(tmp_path / "other"), "--resamples", "5"])


def test_the_docs_page_commands_are_the_tested_ones():
    page = (REPO_ROOT / "docs" / "comparing.md").read_text()
    assert ".venv/bin/python scripts/compare_models.py --a outputs/distilled/eval --b outputs/baseline/eval" in page
    assert "configs/evaluate.json" in page and "per_image.csv" in page
    assert "python " not in page.replace(".venv/bin/python ", "")  # every command with the project's interpreter
