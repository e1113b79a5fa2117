"""Shared fixtures: where the real data lives, and how a missing copy is treated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$CXR_DATA_ROOT``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def require_shared(relative: str) -> Path:
    """Path of a file under the real-data root; skip when absent, but fail under CI=true."""
    path = data_root() / relative
    if not path.exists():
        message = f"real data missing: {path} (set CXR_DATA_ROOT)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared("")


def run_bundle(config_file: str | list[str], run_id: str, output_dir, **overrides):
    """Run a bundle config id in this process, from the bundle root, as `monai.bundle run` does."""
    from monai.bundle import ConfigWorkflow

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        workflow = ConfigWorkflow(config_file=config_file, meta_file="configs/metadata.json",
                                  logging_file="configs/logging.conf",
                                  workflow_type="train" if run_id == "training" else "eval", run_id=run_id,
                                  output_dir=str(output_dir), **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    finally:
        os.chdir(cwd)
    return workflow


def loss_term_means(workflow) -> dict[str, float]:
    """The last epoch's mean of every loss term of a training run (``loss_mean/<term>`` metrics), by term."""
    metrics = workflow.parser.get_parsed_content("train#trainer").state.metrics
    return {name[len("loss_mean/"):]: value for name, value in metrics.items() if name.startswith("loss_mean/")}


def error_chain(error: BaseException) -> list[BaseException]:
    """The error and every error it was raised from or during (MONAI's config parser wraps errors)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The docs test (every documented command, minutes) first, so that pytest-xdist runs it beside the rest of
    the suite instead of after it."""
    items.sort(key=lambda item: item.name != "test_every_documented_command_runs_on_a_fresh_clone")
