"""cxr-distill: train, explain and deploy small, fast chest X-ray classifiers by knowledge distillation."""

__version__ = "0.7.0"

from . import (  # noqa: E402
    console, data, distill, engines, error_report, handlers, inference, localization, losses, metrics, networks,
    runtime,
)

error_report.install()  # a data error's own message is the last line of `monai.bundle run` (see bundle.error_report)

__all__ = ["console", "data", "distill", "engines", "handlers", "inference", "localization", "losses", "metrics", "networks",
           "runtime", "__version__"]
