"""The exported bundle as a model of MONAI Label's ``monaibundle`` app (classification inference).

MONAI Label's ``BundleInferTask`` (monailabel 0.8.5, ``monailabel/tasks/infer/bundle.py``) relies on:

* ``configs/inference.json`` and ``models/model.pt`` (else ``model.ts``) in the bundle folder;
* ``network_def``, instantiated after the bundle folder is put first on ``sys.path`` (our ``bundle`` code
  lies there), with ``bundle_root`` set to the folder and ``device`` to the request's device;
* ``preprocessing`` / ``inferer`` / ``postprocessing`` ids: a ``Compose`` is unpacked into a list, anything
  else is used as that list as it is, so a bare ``Activationsd`` as postprocessing fails
  (``'Activationsd' object is not iterable``);
* ``metadata.json``: the first ``network_data_format.inputs`` key is the image key, the first ``outputs`` key
  the prediction key, ``outputs.<key>.channel_def`` the label names (lower-cased), ``inputs.<key>.spatial_shape``
  the dimension;
* the folder name: the app creates ``BundleInferTask(path, conf)`` without a type, so the type comes from the
  name: ``classification`` in it gives a classifier, anything else is taken as segmentation (and the
  segmentation writer then fails on a vector of class scores);
* the checkpoint: ``torch.load(model.pt).get("model", checkpoint)`` loaded strictly into ``network_def``;
* the classification path: ``pred = network(image[None])[0]``, the post transforms, then
  ``ClassificationWriter``, which reads ``pred.array`` (a MetaTensor) and reports ``{idx, label, score}``
  per channel. Its ``Restored`` post transform is a no-op here (no ``image_meta_dict``, a 1-D ``pred``).

The first test checks that contract without monailabel (CI has no monailabel); the second runs MONAI Label's
own ``BundleInferTask`` and skips when monailabel is not installed. monailabel 0.8.5 imports
``torchvision.utils`` (``make_grid`` / ``save_image``, used only by its debug image writers); the only
torchvision for torch 2.13 on PyPI is a CUDA build that does not load beside the CPU torch, so when
torchvision cannot be imported the subprocess gives monailabel a stand-in ``torchvision.utils`` whose two
functions raise if called. Install line and details: README, "Use in MONAI Label".
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from conftest import require_shared
from export_support import CLASSES, DICOM, NAME, PNG, export_random_student, reference_probabilities


@pytest.fixture(scope="module")
def app_model_dir(tmp_path_factory):
    """The exported bundle where the monaibundle app keeps its models: ``<app>/model/<name>/``."""
    folder = tmp_path_factory.mktemp("monailabel")
    result = export_random_student(folder, zip_bundle=False)
    target = folder / "app" / "model" / NAME
    shutil.copytree(result.bundle_dir, target)
    return target


def test_bundle_meets_the_bundle_infer_task_contract(app_model_dir):
    path = app_model_dir
    assert "classification" in path.name.lower()
    assert (path / "configs" / "inference.json").is_file() and (path / "models" / "model.pt").is_file()
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
    key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
    assert (key_image, key_pred) == ("image", "pred") and len(image["spatial_shape"]) == 2
    labels = {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}
    assert labels == {c.lower(): i for i, c in enumerate(CLASSES)}

    parser = ConfigParser()
    parser.read_config(str(path / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(path), "device": "cpu"})
    network = parser.get_parsed_content("network_def", instantiate=True)
    checkpoint = torch.load(path / "models" / "model.pt", map_location="cpu")
    network.load_state_dict(checkpoint.get("model", checkpoint), strict=True)
    network.eval()
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    post = parser.get_parsed_content("postprocessing", instantiate=True)
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    assert isinstance(pre, Compose) and isinstance(post, Compose)

    images = [require_shared(DICOM), require_shared(PNG)]
    expected = reference_probabilities(path, images)
    for image_path, probabilities in zip(images, expected):
        data = {"image": str(image_path), "image_path": str(image_path), "device": "cpu"}
        for transform in list(pre.transforms):
            data = transform(data)
        with torch.no_grad():
            data[key_pred] = inferer(torch.as_tensor(data[key_image])[None], network)[0]
        for transform in list(post.transforms):
            data = transform(data)
        assert isinstance(data[key_pred], MetaTensor)  # ClassificationWriter logs pred.array
        scores = [float(s) for s in data[key_pred]]
        assert scores == pytest.approx(probabilities.tolist(), abs=1e-6)
        assert all(0.0 < s < 1.0 for s in scores)


PROBE = r"""
import json, sys, types
try:
    import torchvision.utils  # noqa: F401
except Exception:  # no torchvision, or a CUDA build that cannot load beside a CPU torch
    stand_in, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    def _unavailable(*args, **kwargs):
        raise NotImplementedError("torchvision is not installed")
    utils.make_grid = utils.save_image = _unavailable
    stand_in.utils = utils
    sys.modules["torchvision"], sys.modules["torchvision.utils"] = stand_in, utils
import monailabel
from monailabel.tasks.infer.bundle import BundleInferTask

path, images = sys.argv[1], sys.argv[2:]
task = BundleInferTask(path, {})  # exactly as the monaibundle app creates it
results = [task({"image": image, "device": "cpu"}) for image in images]
import bundle
print(json.dumps({"version": monailabel.__version__, "valid": task.is_valid(), "type": str(task.type.value),
                  "labels": task.labels, "dimension": task.dimension, "code": bundle.__file__,
                  "results": [[label, result["prediction"]] for label, result in results]}))
"""


@pytest.mark.skipif(importlib.util.find_spec("monailabel") is None,
                    reason="monailabel is not installed (see README, 'Use in MONAI Label')")
def test_monailabel_bundle_infer_task_classifies_real_images(app_model_dir, tmp_path):
    images = [require_shared(DICOM), require_shared(PNG)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", PROBE, str(app_model_dir), *map(str, images)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"monailabel {report['version']}: {report['results']}")
    assert report["valid"] and report["type"] == "classification" and report["dimension"] == 2
    assert report["labels"] == {c.lower(): i for i, c in enumerate(CLASSES)}
    assert Path(report["code"]).resolve() == (app_model_dir / "bundle" / "__init__.py").resolve()
    expected = reference_probabilities(app_model_dir, images)
    for (label_file, prediction), probabilities in zip(report["results"], expected):
        assert label_file is None  # a classifier writes no label image
        assert [p["idx"] for p in prediction] == list(range(len(CLASSES)))
        assert [p["label"] for p in prediction] == [c.lower() for c in CLASSES]
        assert [p["score"] for p in prediction] == pytest.approx(probabilities.tolist(), abs=1e-5)
