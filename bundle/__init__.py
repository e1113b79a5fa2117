"""cxr-distill: train, explain and deploy small, fast chest X-ray classifiers by knowledge distillation."""

__version__ = "0.5.0"

from . import data, distill, engines, handlers, inference, localization, losses, metrics, networks  # noqa: E402

__all__ = ["data", "distill", "engines", "handlers", "inference", "localization", "losses", "metrics", "networks",
           "__version__"]
