"""Every run ends with one line saying what happened and the next command; the commands it gives run as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from bundle.handlers.summary import _bundle_run_arguments, evaluation_command, shell_quote
from conftest import REPO_ROOT, require_shared

MONAI_MAIN = "/venv/lib/python3.11/site-packages/monai/bundle/__main__.py"


def test_the_evaluation_command_keeps_the_run_configs_and_overrides():
    argv = [MONAI_MAIN, "run", "training", "--config_file", "['configs/student.json','configs/assistant.json']",
            "--dataset", "nih", "--dataset_dir", "../shared/data/nih14_subset", "--output_dir", "outputs/a b"]
    assert _bundle_run_arguments(argv) == (["configs/student.json", "configs/assistant.json"],
                                           ["--dataset", "nih", "--dataset_dir", "../shared/data/nih14_subset",
                                            "--output_dir", "outputs/a b"])
    words = shlex.split(evaluation_command("outputs/a b", argv))
    assert words[1:] == ["-m", "monai.bundle", "run", "evaluating", "--config_file",
                         "['configs/student.json','configs/assistant.json','configs/evaluate.json']", "--dataset", "nih",
                         "--dataset_dir", "../shared/data/nih14_subset", "--output_dir", "outputs/a b"]
    assert _bundle_run_arguments(["pytest", "-q"]) is None  # not a bundle run: a generic command instead
    assert "configs/evaluate.json" in evaluation_command("outputs/x", ["pytest"])
    for word in ("plain", "--x", "['a','b']", 'say "hi"', "$HOME", "it's"):
        assert shlex.split(shell_quote(word)) == [word]


def _run(words: list[str], cwd=REPO_ROOT) -> tuple[int, list[str]]:
    """Run a printed command with this Python in place of its ``.venv/bin/python``."""
    assert words[0].endswith("python"), words
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600)
    return result.returncode, result.stdout.rstrip().splitlines()


def _next(line: str, marker: str) -> list[str]:
    return shlex.split(line.split(marker, 1)[1])


@pytest.mark.timeout(1500)
def test_training_evaluation_inference_and_export_each_end_with_the_next_command(tmp_path):
    out = tmp_path / "student"
    code, lines = _run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/student.json",
                        "--output_dir", str(out), "--max_epochs", "2", "--image_size", "32", "--device", "cpu",
                        "--dataset_options", "{'num_images': 80}"])
    assert code == 0, lines[-30:]
    last = lines[-1]
    assert last.startswith("cxr-distill: training finished (2 epochs in ") and "best validation auc_macro " in last
    assert f"model {out / 'model.pt'}" in last and f"metrics {out / 'metrics.json'}" in last
    assert "decision thresholds" in last and not any("Engine run finished" in line and "CXRTrainer" in line
                                                     for line in lines)

    code, lines = _run(_next(last, "evaluate it on the test split: ") + ["--bootstrap_resamples", "20"])
    assert code == 0, lines[-30:]
    last = lines[-1]
    assert last.startswith(f"cxr-distill: evaluation of {out / 'model.pt'} on the test split") and "auc_macro " in last
    assert "at the model's thresholds" in last and str(out / "eval" / "metrics.json") in last
    assert not any("resuming from iteration 0" in line or "Got new best metric" in line for line in lines)

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").symlink_to(require_shared("cxr3/images/Actualmed_013fa10c223f.png"))
    (images / "b.dcm").symlink_to(require_shared("dicom/chest_cr_monochrome1.dcm"))
    words = [str(images) if w == "<images>" else w for w in _next(last, "predict on your images: ")]
    words[words.index("--output_dir") + 1] = str(tmp_path / "inference")
    code, lines = _run(words + ["--saliency_enabled", "false", "--device", "cpu"])
    assert code == 0, lines[-30:]
    last = lines[-1]
    assert last.startswith("cxr-distill: inference in ") and "2 of 2 input(s) predicted" in last
    assert "saliency maps" not in last and not (tmp_path / "inference" / "saliency").exists()
    assert not any("resuming from iteration 0" in line for line in lines)

    words = _next(last, "package the model as a bundle: ")
    words[words.index("--out") + 1] = str(tmp_path / "export")
    code, lines = _run(words + ["image_size=32", "--no_zip", "--schema",
                                str(require_shared("../monai/meta_schema_20240725.json"))])
    assert code == 0, lines[-30:]
    summary = next(line for line in lines if line.startswith("cxr-distill: exported"))
    assert "-m bundle.deploy -i path/to/image.dcm" in summary and "scripts/monailabel_server.py --bundle" in summary
