"""Ignite handlers, one concern each."""

from .loss_terms import LossTermsLogger
from .metrics_writer import MetricsJSONWriter
from .progress import ProgressBar
from .run_log import RunLogFile

__all__ = ["LossTermsLogger", "MetricsJSONWriter", "ProgressBar", "RunLogFile"]
