"""The teacher-output cache gives the same loss as the online teacher, and a disk cache is reused."""

from __future__ import annotations

import pytest
import torch
from monai.data import Dataset

from bundle.distill import FrozenTeacher, TAKDDistiller, TeacherOutputCache, freeze, with_sample_index
from bundle.losses import FeatureWassersteinLoss, HardLabelLoss, SoftLabelLoss
from bundle.networks import ThreeConvStudent
from bundle.stages import stage_configs
from conftest import loss_term_means, run_bundle

PAIRS = [["conv1", "conv1"], ["conv2", "conv2"], ["conv3", "conv3"]]


def _records(n: int = 10, size: int = 32) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=generator), "label": torch.tensor([i % 2, 1 - i % 2])}
            for i in range(n)]


def _distiller(teacher, cache=None) -> tuple[torch.nn.Module, TAKDDistiller]:
    torch.manual_seed(1)  # same adapters and student in both distillers
    student = ThreeConvStudent(in_channels=1, out_channels=2, channels=(8, 8, 16))
    source = cache if cache is not None else FrozenTeacher(teacher, [t for _, t in PAIRS], (1, 32, 32))
    return student, TAKDDistiller(student, HardLabelLoss("multiclass"), source,
                                  soft_loss=SoftLabelLoss("multiclass", temperature=4.0),
                                  feature_loss=FeatureWassersteinLoss(), feature_pairs=PAIRS,
                                  weights={"soft": 1.0, "feature": 0.5}, input_shape=(1, 32, 32))


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_cached_loss_equals_online_loss(tmp_path, storage):
    torch.manual_seed(0)
    teacher = freeze(ThreeConvStudent(in_channels=1, out_channels=2, channels=(16, 16, 32)))
    records = _records()
    dataset = Dataset(with_sample_index(records))
    cache = TeacherOutputCache.compute(teacher, [t for _, t in PAIRS], dataset, storage=storage,
                                       directory=tmp_path, batch_size=4)
    assert len(cache) == len(records)

    index = torch.tensor([7, 2, 5])
    images = torch.stack([records[i]["image"] for i in index])
    terms = {}
    for name, use_cache in (("online", None), ("cached", cache)):
        student, distiller = _distiller(teacher, use_cache)
        batch = {"image": images, "label": torch.stack([records[i]["label"] for i in index]), "sample_index": index}
        terms[name] = distiller.forward_train(batch, student)[1]
        assert distiller.student_hooks.features == {}
        assert use_cache is not None or distiller.teacher.hooks.features == {}
    assert set(terms["online"]) == set(terms["cached"]) == {"hard", "soft", "feature/conv1", "feature/conv2",
                                                            "feature/conv3"}
    for key, value in terms["online"].items():
        torch.testing.assert_close(terms["cached"][key], value, rtol=1e-5, atol=1e-6)


def test_disk_cache_is_reused_and_float16_is_close(tmp_path):
    torch.manual_seed(0)
    teacher = freeze(ThreeConvStudent(in_channels=1, out_channels=2, channels=(16, 16, 32)))
    dataset = Dataset(with_sample_index(_records()))
    first = TeacherOutputCache.compute(teacher, ["conv2"], dataset, storage="disk", directory=tmp_path)
    assert (first.location / "manifest.json").is_file()
    mtime = (first.location / "logits.npy").stat().st_mtime_ns
    again = TeacherOutputCache.compute(teacher, ["conv2"], dataset, storage="disk", directory=tmp_path)
    assert again.location == first.location and (again.location / "logits.npy").stat().st_mtime_ns == mtime

    # other teacher weights: another fingerprint, another folder
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)
    changed = TeacherOutputCache.compute(teacher, ["conv2"], dataset, storage="disk", directory=tmp_path)
    assert changed.location != first.location

    half = TeacherOutputCache.compute(teacher, ["conv2"], dataset, storage="memory", dtype="float16")
    full = TeacherOutputCache.compute(teacher, ["conv2"], dataset, storage="memory")
    assert half.nbytes * 2 == full.nbytes
    logits_h, maps_h = half.lookup([0, 3])
    logits_f, maps_f = full.lookup([0, 3])
    assert logits_h.dtype == torch.float32
    torch.testing.assert_close(logits_h, logits_f, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(maps_h["conv2"], maps_f["conv2"], rtol=2e-3, atol=2e-3)
    with pytest.raises(IndexError, match="training list changed"):
        full.lookup([len(dataset)])


def test_student_stage_trains_from_a_disk_cache(tmp_path):
    tiny = {"dataset_options": {"num_images": 24, "source_size": 64}, "image_size": 32, "batch_size": 8,
            "max_epochs": 1, "num_workers": 0, "device": "cpu", "teacher_members": ["efficientnet-b0"]}
    run_bundle(stage_configs("teacher"), "training", tmp_path / "teacher", **tiny)
    student = run_bundle("configs/student.json", "training", tmp_path / "student", **tiny,
                         teacher_ckpt=str(tmp_path / "teacher" / "model.pt"), teacher_cache="disk",
                         teacher_cache_dtype="float16")
    terms = loss_term_means(student)
    assert {"hard", "soft", "feature/conv1", "feature/conv3"} <= set(terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    caches = list((tmp_path / "student" / "teacher_cache").glob("*/manifest.json"))
    assert len(caches) == 1
    distiller = student.parser.get_parsed_content("distiller")
    assert len(distiller.teacher) == len(student.parser.get_parsed_content("data#splits").train)
