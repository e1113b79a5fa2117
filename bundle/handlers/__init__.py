"""Ignite handlers, one concern each."""

from .checkpoint import ModelSaver, ResumeCheckpoint, save_atomic
from .guards import NonFiniteLossError, NonFiniteLossGuard
from .loss_terms import LossTermsLogger
from .metrics_writer import MetricsJSONWriter
from .progress import ProgressBar
from .run_log import RunLogFile
from .seeding import SeedEachEpoch, epoch_seed

__all__ = [
    "LossTermsLogger",
    "MetricsJSONWriter",
    "ModelSaver",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "ProgressBar",
    "ResumeCheckpoint",
    "RunLogFile",
    "SeedEachEpoch",
    "epoch_seed",
    "save_atomic",
]
