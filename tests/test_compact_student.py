"""The compact real-time path: DenseNet161 teacher -> compact student (Termritthikun et al.)."""

from __future__ import annotations

import pytest
import torch
from monai.visualize import GradCAM

from bundle.handlers.saliency import gradients_from_layer
from bundle.networks import (NETWORKS, DenseNet161, MobileNetV3, build_network, count_flops, count_parameters,
                             profile_networks, profile_table)
from bundle.stages import stage_configs
from conftest import loss_term_means, run_bundle

TINY = {"dataset_options": {"num_images": 24, "source_size": 64}, "image_size": 32, "batch_size": 8,
        "max_epochs": 1, "num_workers": 0, "device": "cpu"}


def test_compact_student_is_within_the_papers_budget_at_224_px():
    # the network as the stage config builds it, for ChestX-ray14's 14 findings
    network, image_size = build_network("compact_student", num_classes=14)
    assert isinstance(network, MobileNetV3) and image_size == 224
    assert count_parameters(network) <= 5_000_000
    # PyTorch's counter: 2 FLOPs per multiply-add (the strict reading of "0.35 GFLOPs")
    assert count_flops(network, (1, 224, 224)) <= 0.35e9
    # the width is a top-level id of the stage config (--width_mult): 1.0 is MobileNetV3-Large itself
    wider, _ = build_network("compact_student", num_classes=14, overrides={"width_mult": 1.0})
    assert count_parameters(wider) == 4_219_678 > count_parameters(network)


def test_networks_are_the_published_architectures():
    # torchvision's mobilenet_v3_large and densenet161 (ImageNet: 3 channels, 1,000 classes) have exactly these counts
    assert count_parameters(MobileNetV3(in_channels=3, out_channels=1000, width_mult=1.0)) == 5_483_032
    assert count_parameters(DenseNet161(in_channels=3, out_channels=1000)) == 28_681_000


def test_grad_cam_explains_the_compact_student_at_its_head():
    network = MobileNetV3(in_channels=1, out_channels=5).eval()
    saliency = GradCAM(nn_module=network, target_layers=NETWORKS["compact_student"].saliency_layer)(
        torch.rand(2, 1, 64, 64), class_idx=1)
    assert saliency.shape == (2, 1, 64, 64) and torch.isfinite(saliency).all()


def test_densenet161_teacher_then_compact_student_multilabel(tmp_path):
    teacher = run_bundle(stage_configs("densenet161"), "training", tmp_path / "densenet161", **TINY)
    assert teacher.parser.get_parsed_content("data#task") == "multilabel"
    assert set(loss_term_means(teacher)) == {"hard"}

    student = run_bundle(stage_configs("compact_student"), "training", tmp_path / "compact",
                         densenet161_ckpt=str(tmp_path / "densenet161" / "model.pt"), **TINY)
    terms = loss_term_means(student)
    assert set(terms) == {"hard", "soft", "feature/stage2", "feature/stage3", "feature/stage4"}
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert type(student.parser.get_parsed_content("distiller").teacher.network).__name__ == "DenseNet161"
    # the checkpoint holds the student alone
    state = torch.load(tmp_path / "compact" / "model.pt", weights_only=True)
    assert set(state) == set(student.parser.get_parsed_content("network").state_dict())


def test_profile_report_covers_every_network_at_its_configured_size():
    rows = profile_networks(num_classes=14)
    assert [r["name"] for r in rows] == list(NETWORKS)
    sizes = {r["name"]: r["image_size"] for r in rows}
    assert sizes["student"] == 128 and sizes["densenet161"] == 224 and sizes["compact_student"] == 224
    assert all(r["parameters"] > 0 and r["gflops"] > 0 and abs(r["gmacs"] * 2 - r["gflops"]) < 1e-12 for r in rows)
    table = profile_table(rows)
    assert table.count("\n") == len(rows) + 1 and "MobileNetV3-Large" in table


@pytest.mark.parametrize("name", ["student", "compact_student", "assistant", "teacher"])
def test_grad_cam_from_its_layer_on_gives_the_same_maps(name):
    network, _ = build_network(name, num_classes=3)
    network.eval()
    layer = NETWORKS[name].saliency_layer
    images = torch.rand(2, 1, 64, 64)
    reference = GradCAM(nn_module=network, target_layers=layer)(images, class_idx=2)
    with gradients_from_layer(network, layer):
        fast = GradCAM(nn_module=network, target_layers=layer)(images, class_idx=2)
        assert not any(p.requires_grad for p in network.parameters())
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    assert all(p.requires_grad for p in network.parameters())  # restored


def _seeded_student(seed: int, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    network, _ = build_network("student", num_classes=num_classes)
    return network.eval()


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_one_forward_pass_gives_the_prediction_and_the_top_class_map(task, tmp_path):
    from bundle.handlers import SaliencyWriter

    network = _seeded_student(seed=0, num_classes=4)
    images = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        expected_logits = network(images)
    writer = SaliencyWriter(network, "conv3", tmp_path, ["a", "b", "c", "d"], task=task, threshold=2.0,
                            max_classes=1)  # threshold 2: the top class only
    calls = []
    handle = network.register_forward_hook(lambda *args: calls.append(1))
    logits, maps = writer.explain(images)
    handle.remove()
    assert len(calls) == 1  # prediction and map from the same pass
    torch.testing.assert_close(logits, expected_logits, atol=1e-6, rtol=1e-5)
    top = expected_logits.argmax(1).tolist()
    assert [list(m) for m in maps] == [[k] for k in top]
    # the same maps as the two-pass path (prediction first, then Grad-CAM of that class)
    probabilities = torch.sigmoid(expected_logits) if task == "multilabel" else torch.softmax(expected_logits, 1)
    none, reference = writer.explain(images, probabilities)
    assert none is None
    for row, k in enumerate(top):
        assert maps[row][k].shape == (1, 48, 48)
        torch.testing.assert_close(maps[row][k], reference[row][k], atol=1e-5, rtol=1e-4)
    writer.write(["x", "y", "z"], images, maps)
    assert sorted(p.name for p in (tmp_path / "saliency").iterdir()) == sorted(
        f"{s}_{'abcd'[k]}.{e}" for s, k in zip("xyz", top) for e in ("npy", "png"))


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_grad_cam_of_a_batch_equals_each_image_alone(method, tmp_path):
    # MONAI's class score is wrong for batches: B x B for arg-max classes, broadcast along the width in Grad-CAM++
    from bundle.handlers import SaliencyWriter
    from bundle.handlers.saliency import make_cam, per_image_class_score

    logits = torch.arange(9.0).reshape(3, 3)
    assert per_image_class_score(logits, torch.tensor([2, 0, 1])).flatten().tolist() == [2.0, 3.0, 7.0]  # own class
    assert per_image_class_score(logits, 1).shape == (3, 1, 1, 1)
    network = _seeded_student(seed=0, num_classes=3)
    images = torch.rand(3, 1, 24, 24)  # conv3's map is 3 wide: W == B, where MONAI would mix images silently
    cam = make_cam(method, network, "conv3")
    for class_idx in (1, None):  # None: each image's own arg-max class
        batch = cam(images, class_idx=class_idx)
        for i in range(3):
            torch.testing.assert_close(batch[i:i + 1], cam(images[i:i + 1], class_idx=class_idx), atol=1e-5, rtol=1e-4)
    writer = SaliencyWriter(network, "conv3", tmp_path, ["a", "b", "c"], method=method, max_classes=1,
                            threshold=2.0)
    logits, maps = writer.explain(images)
    with torch.no_grad():
        torch.testing.assert_close(logits, network(images), atol=1e-6, rtol=1e-5)
    assert [len(m) for m in maps] == [1, 1, 1]


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_saliency_maps_are_brightest_where_the_class_evidence_is(method, tmp_path):
    # MONAI's default CAM normaliser maps (min, max) to (1, 0): the bundle's maps must not be flipped
    from monai.visualize import GradCAMpp

    from bundle.handlers import SaliencyWriter
    from bundle.localization import cam_saliency

    network = _seeded_student(seed=1, num_classes=3)
    images = torch.rand(2, 1, 64, 64)
    cams = {"gradcam": GradCAM, "gradcampp": GradCAMpp}
    unscaled = cams[method](nn_module=network, target_layers="conv3", postprocessing=lambda x: x)
    def raw_maps(k: int) -> torch.Tensor:
        return torch.cat([unscaled(images[i:i + 1], class_idx=k) for i in range(2)]).detach()

    k = next(k for k in range(3) if (raw_maps(k).amax((1, 2, 3)) > raw_maps(k).amin((1, 2, 3))).all())
    raw = raw_maps(k)
    expected = (raw - raw.amin((1, 2, 3), keepdim=True)) / (raw.amax((1, 2, 3), keepdim=True)
                                                           - raw.amin((1, 2, 3), keepdim=True))
    writer = SaliencyWriter(network, "conv3", tmp_path, ["a", "b", "c"], method=method)
    probabilities = torch.full((2, 3), 0.1)
    probabilities[:, k] = 0.9
    _, maps = writer.explain(images, probabilities)
    for row in range(2):
        torch.testing.assert_close(maps[row][k], expected[row], atol=1e-5, rtol=1e-4)
        assert float(maps[row][k].max()) == pytest.approx(1.0)
    torch.testing.assert_close(cam_saliency(network, "conv3", method)(images, k), expected[:, 0], atol=1e-5, rtol=1e-4)
