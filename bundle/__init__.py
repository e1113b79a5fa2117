"""cxr-distill: train, explain and deploy small, fast chest X-ray classifiers by knowledge distillation."""

__version__ = "0.8.1"

import warnings  # noqa: E402

# With the deploy extra installed, `import monai` imports Holoscan, whose import warns that the 8 MB default stack
# is below the 32 MB it recommends for its applications: not about this package (docs/setup.md says so once).
warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)

from . import (  # noqa: E402
    console, data, distill, engines, error_report, handlers, inference, localization, losses, metrics, networks,
    runtime,
)

error_report.install()  # a data error's own message is the last line of `monai.bundle run` (see bundle.error_report)

__all__ = ["console", "data", "distill", "engines", "handlers", "inference", "localization", "losses", "metrics", "networks",
           "runtime", "__version__"]
