"""Ignite handlers, one concern each."""

from .attention import AttentionMapWriter
from .checkpoint import ModelSaver, ResumeCheckpoint, save_atomic
from .intervals import ConfidenceIntervals
from .guards import NonFiniteLossError, NonFiniteLossGuard
from .loss_terms import LossTermsLogger
from .metrics_writer import MetricsJSONWriter
from .predictions import PredictionWriter
from .progress import ProgressBar
from .run_log import RunLogFile
from .saliency import SaliencyWriter, saliency_targets
from .seeding import SeedEachEpoch, epoch_seed
from .tracking import TrackingSetup, tracking_run_name

__all__ = [
    "AttentionMapWriter",
    "ConfidenceIntervals",
    "LossTermsLogger",
    "MetricsJSONWriter",
    "ModelSaver",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionWriter",
    "ProgressBar",
    "ResumeCheckpoint",
    "RunLogFile",
    "SaliencyWriter",
    "SeedEachEpoch",
    "TrackingSetup",
    "epoch_seed",
    "save_atomic",
    "saliency_targets",
    "tracking_run_name",
]
