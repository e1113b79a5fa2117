"""The training stages and the config files each one runs with.

``configs/student.json`` is the one complete training config (the main job: data, networks,
preprocessing, distiller, trainer, evaluator, handlers). Every other stage is a small overlay
that MONAI merges after it and that holds only what differs, as Model Zoo bundles keep
``train.json`` plus overlays such as ``multi_gpu_train.json``::

    python -m monai.bundle run training --config_file configs/student.json
    python -m monai.bundle run training --config_file "['configs/student.json','configs/teacher.json']"

MLCAK's ViT stages share their two-head network, loss and evaluator through
``configs/vit_student.json``; ``configs/vit_teacher.json`` turns that into the teacher stage.
``configs/evaluate.json`` and ``configs/multi_gpu_train.json`` are merged after a stage's files.
"""

from __future__ import annotations

__all__ = ["STAGES", "stage_configs", "stage_command"]

MAIN = "configs/student.json"

#: stage -> its config files, in merge order
STAGES: dict[str, tuple[str, ...]] = {
    "student": (MAIN,),
    "teacher": (MAIN, "configs/teacher.json"),
    "assistant": (MAIN, "configs/assistant.json"),
    "densenet161": (MAIN, "configs/densenet161.json"),
    "compact_student": (MAIN, "configs/compact_student.json"),
    "vit_student": (MAIN, "configs/vit_student.json"),
    "vit_teacher": (MAIN, "configs/vit_student.json", "configs/vit_teacher.json"),
}


def stage_configs(stage: str, *after: str) -> list[str]:
    """The config files of ``stage`` (relative to the bundle root), then ``after`` (e.g. ``configs/evaluate.json``)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return [*STAGES[stage], *after]


def stage_command(stage: str, run_id: str = "training", *after: str) -> str:
    """The command line that runs ``stage`` (as the README writes it)."""
    files = stage_configs(stage, *after)
    config = files[0] if len(files) == 1 else '"[' + ",".join(f"'{f}'" for f in files) + ']"'
    return f"python -m monai.bundle run {run_id} --config_file {config}"
