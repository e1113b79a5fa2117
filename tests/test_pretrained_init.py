"""init_checkpoint: a stage's network starts from weights trained elsewhere (ImageNet RGB stems included)."""

from __future__ import annotations

import os

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.networks.nets import DenseNet121, EfficientNetBN

from bundle.networks import EfficientNetEnsemble, ThreeConvStudent, load_initial_weights
from conftest import REPO_ROOT


def _rgb_b0(tmp_path, classes: int = 5) -> tuple[EfficientNetBN, str]:
    """An 'ImageNet-like' B0: RGB stem, another class count, random weights, saved as a plain state dict."""
    torch.manual_seed(3)
    source = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=classes).eval()
    path = str(tmp_path / "b0_rgb.pth")
    torch.save(source.state_dict(), path)
    return source, path


def test_member_starts_from_rgb_weights_and_answers_gray_images_as_the_rgb_network(tmp_path):
    source, path = _rgb_b0(tmp_path)
    teacher = EfficientNetEnsemble(["efficientnet-b0"], in_channels=1, out_channels=2).eval()
    report = load_initial_weights(teacher, {"members.0": path})

    member = teacher.members[0]
    assert report.adapted == ["members.0._conv_stem.weight"]
    assert {"members.0._fc.weight", "members.0._fc.bias"} == set(report.skipped)  # 5 classes there, 2 here
    assert not report.unused and len(report.loaded) > 100
    own, theirs = teacher.state_dict(), source.state_dict()
    for name in report.loaded:  # e.g. members.0._blocks.3.0._depthwise_conv.weight: the source's, unchanged
        assert torch.equal(own[name], theirs[name.removeprefix("members.0.")]), name
    assert torch.count_nonzero(member._fc.weight) == 0  # the teacher's zero head, as initialised
    # a gray radiograph is R = G = B: the summed stem gives the RGB network's features exactly
    gray = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(member._conv_stem(gray), source._conv_stem(gray.repeat(1, 3, 1, 1)),
                                   rtol=1e-5, atol=1e-5)
        features = member._swish(member._bn0(member._conv_stem(gray)))
        expected = source._swish(source._bn0(source._conv_stem(gray.repeat(1, 3, 1, 1))))
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_bundle_checkpoint_wrappers_and_ddp_prefix_are_read(tmp_path):
    torch.manual_seed(0)
    trained = ThreeConvStudent(in_channels=1, out_channels=2)
    path = tmp_path / "model.pt"
    torch.save({"model": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    fresh = ThreeConvStudent(in_channels=1, out_channels=2)
    report = load_initial_weights(fresh, str(path))
    assert not report.skipped and not report.adapted and not report.unused
    for name, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_bad_init_checkpoints_are_clear_errors(tmp_path):
    student = ThreeConvStudent(in_channels=1, out_channels=2)
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_initial_weights(student, str(missing))
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("these are not weights")
    with pytest.raises(ValueError, match="notes.pth"):
        load_initial_weights(student, str(not_weights))
    densenet = tmp_path / "densenet.pth"
    torch.save(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), densenet)
    with pytest.raises(ValueError, match="no tensor fits"):  # another architecture entirely
        load_initial_weights(student, str(densenet))
    with pytest.raises(ValueError, match="members.7"):
        load_initial_weights(EfficientNetEnsemble(["efficientnet-b0"]), {"members.7": str(densenet)})
    assert load_initial_weights(student, None) is None


def test_stage_config_starts_its_network_from_init_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = ThreeConvStudent(in_channels=1, out_channels=2)  # synthetic_binary: 2 classes
    with torch.no_grad():  # unlike any fresh initialisation, whatever the seed
        for parameter in trained.parameters():
            parameter.add_(0.5)
    path = tmp_path / "start.pt"
    torch.save(trained.state_dict(), path)
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        workflow = ConfigWorkflow(config_file="configs/student.json", meta_file="configs/metadata.json",
                                  workflow_type="train", output_dir=str(tmp_path / "student"), dataset="synthetic_binary",
                                  dataset_options={"num_images": 24, "source_size": 64}, image_size=32,
                                  init_checkpoint=str(path), device="cpu")
        workflow.initialize()
    finally:
        os.chdir(cwd)
    network = workflow.parser.get_parsed_content("network")
    for name, value in trained.state_dict().items():
        assert torch.equal(network.state_dict()[name], value), name
