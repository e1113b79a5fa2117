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

The first test checks that contract without monailabel. The second starts a real MONAI Label server with the
README's commands (``scripts/export_bundle.py``, then ``scripts/monailabel_server.py``: MONAI Label's own monaibundle app and ``start_server``, with
two documented compatibility shims), POSTs a real DICOM and a PNG to ``/infer/<model>`` over HTTP and stops the
server by its process id; it skips when monailabel is not installed, and fails instead under CI=true, where
``scripts/setup_env.sh --tests`` installs it. Details: README, "MONAI Label", and docs/monailabel.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from bundle.export import export_bundle
from conftest import REPO_ROOT, require_shared
from export_support import CLASSES, DICOM, NAME, PNG, random_student_checkpoint, reference_probabilities

NOT_CHEST = "dicom/tibia_cr_not_chest_j2k.dcm"  # a real CR of a tibia (BodyPartExamined EXTREMITY)


def readme_export_folder() -> str:
    """``--out`` of the README's MONAI Label export command (``outputs/monailabel_export``)."""
    tokens = shlex.split(readme_command(".venv/bin/python scripts/export_bundle.py"))
    return tokens[tokens.index("--out") + 1]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A user's working folder after the README's ``scripts/export_bundle.py ... --out outputs/monailabel_export``."""
    folder = tmp_path_factory.mktemp("monailabel")
    schema = require_shared("../monai/meta_schema_20240725.json")
    checkpoint = random_student_checkpoint(folder / "outputs" / "student" / "model.pt")
    export_bundle(checkpoint, folder / readme_export_folder(), NAME, schema=schema, zip_bundle=False)
    return folder


@pytest.fixture(scope="module")
def app_model_dir(user_folder):
    """The exported bundle where the monaibundle app keeps its models: ``<app>/model/<name>/``."""
    target = user_folder / "app" / "model" / NAME
    shutil.copytree(user_folder / readme_export_folder() / NAME, target)
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


def readme_command(prefix: str) -> str:
    """The command line of README's "MONAI Label" section that starts with ``prefix`` (continuations joined)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## MONAI Label\n(.*?)(?=^## )", text, flags=re.M | re.S).group(1)
    lines = [m for m in re.findall(r"^(.+?(?:\\\n.+?)*)$", section, flags=re.M) if m.startswith(prefix)]
    assert len(lines) == 1, f"README's MONAI Label section should show one `{prefix} ...` command"
    return lines[0].replace("\\\n", " ")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _require_monailabel() -> None:
    if importlib.util.find_spec("monailabel") is None:
        message = "monailabel is not installed (bash scripts/setup_env.sh --tests installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.timeout(300)
def test_readme_command_serves_the_bundle_over_http(user_folder):
    """The README's server command, run as a user would from the folder holding its export; the scores
    MONAI Label answers over HTTP are the bundle's own (configs/inference.json) for a real DICOM and a PNG."""
    _require_monailabel()
    import httpx
    import psutil

    tokens = shlex.split(readme_command(".venv/bin/python scripts/monailabel_server.py"))
    assert tokens[:2] == [".venv/bin/python", "scripts/monailabel_server.py"] and "--port" in tokens
    port = _free_port()  # the README's 8000 may be taken on a test machine: the one change made to the command
    tokens[tokens.index("--port") + 1] = str(port)
    command = [sys.executable, str(REPO_ROOT / "scripts" / "monailabel_server.py"), *tokens[2:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MONAI_LABEL_SESSION_PATH"] = str(user_folder / "sessions")  # not the user's ~/.cache
    log = (user_folder / "server.log").open("w")
    server = subprocess.Popen(command, cwd=user_folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"the server stopped: {(user_folder / 'server.log').read_text()[-4000:]}"
            assert time.monotonic() < deadline, "the server did not answer within 240 s"
            try:
                info = httpx.get(f"{url}/info/", timeout=5)
                if info.status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        model = info.json()["models"][NAME]
        assert model["type"] == "classification" and model["dimension"] == 2
        assert model["labels"] == {c.lower(): i for i, c in enumerate(CLASSES)}

        images = [require_shared(DICOM), require_shared(PNG)]
        expected = reference_probabilities(user_folder / readme_export_folder() / NAME, images)
        for image, probabilities in zip(images, expected):
            with image.open("rb") as stream:
                answer = httpx.post(f"{url}/infer/{NAME}", params={"output": "json"},
                                    files={"file": (image.name, stream)}, timeout=120)
            assert answer.status_code == 200, answer.text
            prediction = answer.json()["prediction"]
            print(f"{image.name}: {prediction}")
            assert [p["idx"] for p in prediction] == list(range(len(CLASSES)))
            assert [p["label"] for p in prediction] == [c.lower() for c in CLASSES]
            assert [p["score"] for p in prediction] == pytest.approx(probabilities.tolist(), abs=1e-5)
        # a file the loader refuses is an error naming the problem, never scores of a blank stand-in image
        with require_shared(NOT_CHEST).open("rb") as stream:
            refused = httpx.post(f"{url}/infer/{NAME}", params={"output": "json"},
                                 files={"file": (NOT_CHEST.rsplit("/", 1)[-1], stream)}, timeout=120)
        # 422 with the reason, naming what was sent (not the server's temporary copy) and an option that exists
        assert refused.status_code == 422, refused.text[-2000:]
        detail = refused.json()["detail"]
        assert detail.startswith("the uploaded file 'tibia_cr_not_chest_j2k.dcm': BodyPartExamined is 'EXTREMITY'")
        assert "--set require_chest=false" in detail and "require_chest=False" not in detail
        children = psutil.Process(server.pid).children(recursive=True)
    finally:
        server.send_signal(signal.SIGTERM)  # by its process id, as a user's kill would
        try:
            server.wait(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: the status says the process ended on the signal
    assert server.returncode in (0, -signal.SIGTERM), (user_folder / "server.log").read_text()[-3000:]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]  # nothing left
    printed = (user_folder / "server.log").read_text()
    assert "Application startup complete" in printed and "Application shutdown complete" in printed
    refusals = [line for line in printed.splitlines() if "BodyPartExamined is 'EXTREMITY', not a chest" in line]
    assert len(refusals) == 1 and "refused: the uploaded file 'tibia_cr_not_chest_j2k.dcm'" in refusals[0]
    assert not re.search(r"tmp\w+\.dcm", refusals[0]) and "Traceback" not in printed
    assert "Finished server process" in printed
    link = user_folder / "outputs" / "monailabel" / "monaibundle" / "model" / NAME
    assert link.resolve() == (user_folder / readme_export_folder() / NAME).resolve()


def test_server_script_refuses_what_monailabel_would_fail_on_later(tmp_path, user_folder):
    """Before any import of monailabel: a missing bundle, a folder that is no bundle, a name MONAI Label would
    treat as segmentation; each a one-line error naming the path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("monailabel_server", REPO_ROOT / "scripts" / "monailabel_server.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    renamed = tmp_path / "cxr_distill_student"
    shutil.copytree(user_folder / readme_export_folder() / NAME, renamed)
    (tmp_path / "empty").mkdir()
    cases = {tmp_path / "missing": "no such bundle (export one first",
             tmp_path / "empty": "not a bundle folder (configs/inference.json is missing)",
             renamed: "lacks 'classification' as segmentation"}
    for bundle, expected in cases.items():
        with pytest.raises(SystemExit) as stop:
            script.main(["--bundle", str(bundle), "--app", str(tmp_path / "app")])
        assert str(stop.value).startswith(f"error: {bundle}: ") and expected in str(stop.value)
    assert not (tmp_path / "app").exists()
