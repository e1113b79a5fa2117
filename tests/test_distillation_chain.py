"""Teacher -> assistant -> student, one short run each, in both task modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigWorkflow

from bundle.distill import adapter_key, probe_feature_shapes
from bundle.stages import stage_configs

from conftest import error_chain, loss_term_means, run_bundle

TINY = {"dataset_options": {"num_images": 24, "source_size": 64}, "image_size": 32, "batch_size": 8,
        "max_epochs": 1, "num_workers": 0, "device": "cpu", "teacher_members": ["efficientnet-b0"]}


def run_stage(stage: str, output_dir, **overrides) -> ConfigWorkflow:
    return run_bundle(stage_configs(stage), "training", output_dir, **{**TINY, **overrides})


def _terms(workflow: ConfigWorkflow) -> dict[str, float]:
    return loss_term_means(workflow)


@pytest.mark.parametrize("dataset", ["synthetic", "synthetic_binary"])
def test_chain_runs_and_logs_every_term(tmp_path, dataset):
    teacher = run_stage("teacher", tmp_path / "teacher", dataset=dataset)
    assert set(_terms(teacher)) == {"hard"}
    teacher_ckpt = tmp_path / "teacher" / "model.pt"

    assistant = run_stage("assistant", tmp_path / "assistant", dataset=dataset, teacher_ckpt=str(teacher_ckpt))
    terms = _terms(assistant)
    assert {"hard", "soft", "feature/features.denseblock1", "feature/features.denseblock3"} <= set(terms)
    # the frozen teacher is exactly the checkpoint it was loaded from: training the assistant moved nothing
    distiller = assistant.parser.get_parsed_content("distiller")
    saved = torch.load(teacher_ckpt, weights_only=True)
    for name, value in distiller.teacher.network.state_dict().items():
        assert torch.equal(value.cpu(), saved[name]), name
    assert not distiller.teacher.network.training
    assert all(not p.requires_grad for p in distiller.teacher.network.parameters())

    student = run_stage("student", tmp_path / "student", dataset=dataset,
                        assistant_ckpt=str(tmp_path / "assistant" / "model.pt"))
    terms = _terms(student)
    assert {"hard", "soft", "feature/conv1", "feature/conv2", "feature/conv3"} <= set(terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    # the student's checkpoint holds the student alone (no teacher, no adapters)
    state = torch.load(tmp_path / "student" / "model.pt", weights_only=True)
    assert set(state) == set(student.parser.get_parsed_content("network").state_dict())


def test_student_directly_from_teacher(tmp_path):
    run_stage("teacher", tmp_path / "teacher")
    student = run_stage("student", tmp_path / "student", teacher_ckpt=str(tmp_path / "teacher" / "model.pt"))
    assert {"soft", "feature/conv1"} <= set(_terms(student))


def test_missing_teacher_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(Exception) as info:
        run_stage("assistant", tmp_path / "assistant", teacher_ckpt=str(missing))
    chain = error_chain(info.value)
    found = [e for e in chain if isinstance(e, FileNotFoundError)]
    assert found and str(missing) in str(found[0]) and "configs/teacher.json" in str(found[0])


def test_teacher_sees_a_larger_view_of_the_same_augmented_image(tmp_path):
    """teacher_image_size: a 64 px teacher distils a 32 px student, online and from the cache."""
    run_stage("teacher", tmp_path / "teacher", image_size=64)
    teacher_ckpt = str(tmp_path / "teacher" / "model.pt")
    student = run_stage("student", tmp_path / "student", teacher_ckpt=teacher_ckpt, teacher_image_size=64)
    assert {"hard", "soft", "feature/conv1", "feature/conv3"} <= set(_terms(student))

    batch = next(iter(student.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[-2:]) == (32, 32) and tuple(batch["teacher_image"].shape[-2:]) == (64, 64)
    # one augmented radiograph at two sizes: the student's copy is the teacher's view, area-downsampled
    torch.testing.assert_close(F.adaptive_avg_pool2d(batch["teacher_image"], 32), batch["image"])

    distiller = student.parser.get_parsed_content("distiller")
    network = student.parser.get_parsed_content("network")
    pairs = distiller.feature_pairs
    student_maps = probe_feature_shapes(network, [s for s, _ in pairs], (1, 32, 32))
    teacher_maps = probe_feature_shapes(distiller.teacher.network, [t for _, t in pairs], (1, 64, 64))
    for s, t in pairs:  # the adapters bring the student's maps to the teacher's 64 px maps
        adapted = distiller.adapters[adapter_key(s, t)](torch.zeros(1, *student_maps[s]))
        assert tuple(adapted.shape[1:]) == teacher_maps[t], (s, t)
    with pytest.raises(ValueError, match="teacher_image"):  # the student's 32 px images are not the teacher's view
        distiller.forward_train({"image": batch["image"], "label": batch["label"]}, network)

    cached = run_stage("student", tmp_path / "cached", teacher_ckpt=teacher_ckpt, teacher_image_size=64,
                       teacher_cache="memory")
    cache = cached.parser.get_parsed_content("distiller").teacher
    _, maps = cache.lookup([0])
    assert {t: tuple(m.shape[1:]) for t, m in maps.items()} == {t: teacher_maps[t] for _, t in pairs}
