"""Ignite handlers, one concern each."""

from .attention import AttentionMapWriter
from .averaging import WeightAveraging
from .checkpoint import ModelSaver, ResumeCheckpoint, save_atomic
from .figures import EvaluationFigures, ValidationFigures
from .intervals import ConfidenceIntervals
from .guards import NonFiniteLossError, NonFiniteLossGuard
from .loss_terms import LossTermMeans, loss_and_terms
from .metrics_writer import MetricsJSONWriter
from .per_image import PerImageScores
from .predictions import PredictionWriter
from .progress import LossProgressBar, ProgressLines
from .run_log import RunLogFile, open_run_log
from .saliency import SaliencyWriter, saliency_targets
from .seeding import SeedEachEpoch, epoch_seed
from .summary import EvaluationSummary, InferenceSummary, TrainingSummary
from .thresholds import DecisionThresholds
from .tracking import flatten_params, tracking_artifacts, tracking_run_name

__all__ = [
    "AttentionMapWriter",
    "ConfidenceIntervals",
    "DecisionThresholds",
    "EvaluationFigures",
    "EvaluationSummary",
    "InferenceSummary",
    "LossProgressBar",
    "LossTermMeans",
    "MetricsJSONWriter",
    "ModelSaver",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PerImageScores",
    "PredictionWriter",
    "ProgressLines",
    "ResumeCheckpoint",
    "RunLogFile",
    "SaliencyWriter",
    "SeedEachEpoch",
    "TrainingSummary",
    "ValidationFigures",
    "WeightAveraging",
    "epoch_seed",
    "flatten_params",
    "loss_and_terms",
    "open_run_log",
    "save_atomic",
    "saliency_targets",
    "tracking_artifacts",
    "tracking_run_name",
]
