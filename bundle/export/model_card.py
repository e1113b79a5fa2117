"""``docs/README.md`` of an exported bundle: the model card, filled from ``templates/model_card.md``.

The card's text lives in the template (as the Model Zoo keeps each bundle's ``docs/README.md`` as a
file); this module only gathers what the template shows: the bundle's metadata and config, the
checkpoint's own ``metrics.json`` and the project's measured reference results from
``docs/results.md``, labelled as such. Rendered with Jinja2 (``StrictUndefined``: a name the template
uses and nobody gave fails the export instead of leaving a gap in the card).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATE", "model_card"]

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"

#: The checkpoint's headline metrics, in the card's order; per-class ``auc/<class>`` follow, sorted.
HEADLINE_METRICS = ("auc_macro", "accuracy", "f1_macro", "precision_macro", "recall_macro")
#: Sections of docs/results.md quoted as the project's reference results.
REFERENCE_SECTIONS = ("The main job", "Network size")


def _markdown_section(text: str, heading: str) -> str | None:
    """The ``## heading...`` section of a markdown text, up to the next ``## ``; ``None`` when absent."""
    match = re.search(rf"^## {re.escape(heading)}.*?(?=^## |\Z)", text, flags=re.M | re.S)
    return match.group(0).strip() if match else None


def _format_metric(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _checkpoint_metrics(metrics: Mapping[str, Any], dataset: str | None) -> dict[str, Any]:
    rows = [(key, metrics[key]) for key in HEADLINE_METRICS if key in metrics]
    rows += [(key, value) for key, value in sorted(metrics.items()) if key.startswith("auc/")]
    return {"split": metrics.get("split", "validation"), "dataset": metrics.get("dataset", dataset or "?"),
            "num_samples": metrics.get("num_samples", "?"), "epoch": metrics.get("epoch", "?"), "rows": rows}


def _reference_sections(results_md: str | None) -> list[str]:
    """The quoted sections of ``docs/results.md``, their headings moved two levels down to fit in the card."""
    sections = [_markdown_section(results_md, h) for h in REFERENCE_SECTIONS] if results_md else []
    return [s.replace("\n## ", "\n#### ").replace("## ", "#### ", 1) for s in sections if s]


def model_card(name: str, metadata: Mapping[str, Any], config: Mapping[str, Any], *,
               metrics: Mapping[str, Any] | None = None, results_md: str | None = None,
               dataset: str | None = None, parameters: int | None = None,
               files: Mapping[str, str] | None = None) -> str:
    """``docs/README.md``: what the model is for, what it was trained on, how well it does, what it cannot do.

    Numbers come from the checkpoint's own ``metrics.json`` (written by training beside ``model.pt``)
    when given, and the project's measured reference results from ``docs/results.md``, labelled as such.
    """
    import jinja2

    from .exporters import ONNX_CONVERTER_KWARGS

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     autoescape=False)  # markdown, not HTML
    environment.filters["metric"] = _format_metric
    task = config.get("task", "multilabel")
    return environment.get_template(TEMPLATE.name).render(
        name=name,
        metadata=metadata,
        version=metadata.get("version", "?"),
        classes=list(config.get("class_names", [])),
        size=config.get("image_size"),
        network=config.get("network_def", {}).get("_target_", "?"),
        activation="sigmoid per class (multi-label)" if task == "multilabel" else "softmax over classes (multi-class)",
        parameters=parameters,
        dataset=dataset,
        checkpoint=_checkpoint_metrics(metrics, dataset) if metrics else None,
        reference_sections=_reference_sections(results_md),
        onnx_converter_kwargs=repr(ONNX_CONVERTER_KWARGS),
        files=dict(files or {}),
    )
