"""The two heads of MLCAK's ViTs: which output column is which, and each head's targets.

Akhter et al. train two tasks jointly with BCE: **MLCT**, multi-label "local" findings, and
**MCCT**, the multi-class "global" normal / abnormal decision. No data set here has both
kinds of labels as such; both are derived from the data set's own labels:

=====================  ===============================  =======================================
data set labels        MLCT (findings)                  MCCT (Normal, Abnormal)
=====================  ===============================  =======================================
multi-label            every class but "No Finding"     abnormal = any finding positive; known
(phantoms, NIH, ...)                                    when one is positive or all are known;
                                                        from "No Finding" when the data has it
multi-class with a     the other classes, one-hot       abnormal = not the normal class
normal class (cxr3:    (cxr3: Pneumonia, COVID-19)
Normal / Pneumonia /
COVID-19)
=====================  ===============================  =======================================

A multi-class data set without a class called "Normal" (or "No Finding") has no global
label: an error says so.

The network's output is one tensor: the ``F`` findings, then ``Normal``, ``Abnormal``
(``heads=2``), or the findings alone (``heads=1``, the one-head ablation). Probabilities:
sigmoid for the findings, softmax over the two global columns. With one head the global
probability is derived from the findings (noisy-OR, ``1 - prod_f (1 - p_f)``), so both
heads' AUC can be reported for every model.

Config example::

    "heads": {"_target_": "bundle.networks.HeadLayout", "class_names": "@data#class_names",
              "task": "@data#task", "heads": 2}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["HeadLayout", "GLOBAL_NAMES", "NORMAL_NAMES"]

GLOBAL_NAMES = ("Normal", "Abnormal")
NORMAL_NAMES = ("normal", "no finding", "no_finding", "nofinding")


class HeadLayout:
    """Column layout of a findings + normal/abnormal network, for a data set's classes.

    Args:
        class_names: the data set's class names (``data#class_names``).
        task: the data set's task, ``"multilabel"`` or ``"multiclass"``.
        heads: 2 (findings + normal/abnormal) or 1 (findings only).

    Attributes:
        finding_names: the MLCT classes; ``finding_index`` their columns in the data's labels.
        normal_index: column of the data's normal class, or None.
        num_findings, num_outputs, output_names: the network's outputs.
    """

    def __init__(self, class_names: Sequence[str], task: str, heads: int = 2) -> None:
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        if heads not in (1, 2):
            raise ValueError(f"heads must be 1 or 2, got {heads}")
        self.class_names, self.task, self.heads = [str(c) for c in class_names], task, int(heads)
        normal = [i for i, name in enumerate(self.class_names) if name.strip().lower() in NORMAL_NAMES]
        self.normal_index = normal[0] if normal else None
        if task == "multiclass" and self.normal_index is None:
            raise ValueError(f"the normal/abnormal head needs a normal class (one of {list(NORMAL_NAMES)}) "
                             f"among the multi-class labels {self.class_names}")
        self.finding_index = [i for i in range(len(self.class_names)) if i != self.normal_index]
        if not self.finding_index:
            raise ValueError(f"no finding classes among {self.class_names}")
        self.finding_names = [self.class_names[i] for i in self.finding_index]

    @property
    def num_findings(self) -> int:
        return len(self.finding_index)

    @property
    def num_outputs(self) -> int:
        return self.num_findings + (2 if self.heads == 2 else 0)

    @property
    def output_names(self) -> list[str]:
        return self.finding_names + (list(GLOBAL_NAMES) if self.heads == 2 else [])

    def __repr__(self) -> str:
        return f"HeadLayout(findings={self.finding_names}, heads={self.heads}, from {self.task} {self.class_names})"

    def _check(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] != self.num_outputs:
            raise ValueError(f"expected {self.num_outputs} outputs ({self.output_names}), got {logits.shape[-1]}")

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(findings logits (N, F), global logits (N, 2) or None)``."""
        self._check(logits)
        f = self.num_findings
        return logits[..., :f], (logits[..., f:] if self.heads == 2 else None)

    def targets(self, labels: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(findings y, findings mask, global y, global mask)`` from the data's labels and mask.

        ``global y`` is one-hot ``[normal, abnormal]`` (N, 2); its mask is the same for both columns.
        """
        labels = torch.as_tensor(labels).float()
        mask = torch.ones_like(labels) if mask is None else torch.as_tensor(mask).float().to(labels.device)
        index = torch.as_tensor(self.finding_index, device=labels.device)
        y_f, m_f = labels.index_select(-1, index), mask.index_select(-1, index)
        if self.task == "multiclass":
            known = mask.min(dim=-1).values
            m_f = known[..., None].expand_as(y_f).clone()
            abnormal = 1.0 - labels[..., self.normal_index]
        elif self.normal_index is not None:
            known = mask[..., self.normal_index]
            abnormal = 1.0 - labels[..., self.normal_index]
        else:
            positive = ((y_f * m_f) > 0).any(dim=-1)
            known = (positive | (m_f > 0).all(dim=-1)).float()
            abnormal = positive.float()
        y_g = torch.stack([1.0 - abnormal, abnormal], dim=-1)
        return y_f, m_f, y_g, torch.stack([known, known], dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of the findings, softmax over the global pair; one sample (1-D) or a batch."""
        logits = torch.as_tensor(logits).float()
        findings, global_logits = self.split(logits)
        parts = [torch.sigmoid(findings)] + ([torch.softmax(global_logits, dim=-1)] if global_logits is not None else [])
        return torch.cat(parts, dim=-1)

    def global_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` probabilities of ``[Normal, Abnormal]``: the global head's softmax, or
        (one head) noisy-OR of the findings, ``P(abnormal) = 1 - prod_f (1 - sigmoid(z_f))``."""
        logits = torch.as_tensor(logits).float()
        findings, global_logits = self.split(logits)
        if global_logits is not None:
            return torch.softmax(global_logits, dim=-1)
        # log prod (1 - sigmoid(z)) = sum log sigmoid(-z): stable for large logits
        p_normal = torch.exp(torch.nn.functional.logsigmoid(-findings).sum(dim=-1))
        return torch.stack([p_normal, 1.0 - p_normal], dim=-1)
