"""MLCAK distillation loss: MSE between the two heads' logits and between mean attention maps.

Formula, for a student and a teacher with findings logits ``s^f, t^f`` (N x F), global logits
``s^g, t^g`` (N x 2) and mean attention maps ``A_s`` (N x g_s x g_s) and ``A_t``
(N x g_t x g_t), each summing to 1 (:meth:`bundle.networks.CXRViT.attention_map`):

    L_mlct      = alpha * mean_{i,f} (s^f_if - t^f_if)^2
    L_mcct      = beta  * mean_{i,k} (s^g_ik - t^g_ik)^2
    L_attention = gamma * mean_{i,x} (G^2 * R(A_s)_ix - G^2 * R(A_t)_ix)^2

``R`` brings both maps to one G x G grid (:func:`match_grids`) and renormalises each to sum 1;
the factor ``G^2`` scales them to mean 1 (a uniform map is 1 everywhere), so that the term's
size does not depend on the grid (raw maps of 49 cells hold values near 0.02, and their MSE
would be ~1e-4 whatever the agreement). The teacher's side is detached (a target).

Grids: the teacher at 224 px with 16 px patches has a 14 x 14 grid; the student a
``token_grid`` x ``token_grid`` one (default 7 x 7 at every resolution). With
``grid="student"`` (default) the teacher's map is brought to the student's grid: by area
averaging when it shrinks (``adaptive_avg_pool2d``: exact 2 x 2 block means from 14 to 7, so no
attention mass is lost or invented), by bilinear interpolation when it grows. The student is
asked for nothing it cannot represent. ``grid="teacher"`` brings the student's map up to the
teacher's grid instead (bilinear).

Paper: Akhter et al., "Low-Resolution Chest X-ray Classification via Knowledge Distillation
and Multi-task Learning" (arXiv 2405.13370): distillation = alpha * MSE of the multi-label
(MLCT) logits + beta * MSE of the multi-class (MCCT) logits + gamma * MSE of the MLCAK maps,
the mean self-attention map over all (12) encoder layers; the paper's ablations transfer the
attention of single layers instead (here ``attention_layers: "last"``). The paper does not give
alpha, beta, gamma; the defaults here are 1, 1, 1. It does not say how grids of different sizes
are compared; :func:`match_grids` is our choice.

Config example::

    "loss": {"_target_": "bundle.losses.MLCAKLoss", "alpha": 1.0, "beta": 1.0, "gamma": 1.0,
             "grid": "student"}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distill.features import resize_maps

__all__ = ["MLCAKLoss", "match_grids"]


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def match_grids(student_map: torch.Tensor, teacher_map: torch.Tensor, grid: str = "student"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both ``(N, g, g)`` maps on one grid, each renormalised to sum 1.

    ``grid="student"``: the teacher's map goes to the student's grid; ``"teacher"``: the
    student's to the teacher's. Shrinking averages areas, growing is bilinear
    (:func:`bundle.distill.features.resize_maps`).
    """
    if student_map.dim() != 3 or teacher_map.dim() != 3 or student_map.shape[0] != teacher_map.shape[0]:
        raise ValueError(f"attention maps must be N x g x g with the same N, got {tuple(student_map.shape)} "
                         f"and {tuple(teacher_map.shape)}")
    if grid not in ("student", "teacher"):
        raise ValueError(f"grid must be 'student' or 'teacher', got {grid!r}")
    if grid == "student":
        teacher_map = resize_maps(teacher_map[:, None], tuple(student_map.shape[-2:]))[:, 0]
    else:
        student_map = resize_maps(student_map[:, None], tuple(teacher_map.shape[-2:]))[:, 0]
    return _normalised(student_map), _normalised(teacher_map)


class MLCAKLoss(nn.Module):
    """``{"mlct": alpha * MSE, "mcct": beta * MSE, "attention": gamma * MSE}`` (see the module docstring).

    Args:
        alpha: weight of the findings-logits term.
        beta: weight of the normal/abnormal-logits term (left out when either side has no such head).
        gamma: weight of the attention-map term.
        grid: ``"student"`` or ``"teacher"``: whose token grid the maps are compared on.

    A term whose weight is 0 is not computed.

    Example::

        >>> loss = MLCAKLoss()
        >>> a = torch.full((1, 2, 2), 0.25)
        >>> {k: float(v) for k, v in loss(torch.zeros(1, 3), torch.ones(1, 3), None, None, a, a).items()}
        {'mlct': 1.0, 'attention': 0.0}
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0, grid: str = "student") -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if grid not in ("student", "teacher"):
            raise ValueError(f"grid must be 'student' or 'teacher', got {grid!r}")
        self.alpha, self.beta, self.gamma, self.grid = float(alpha), float(beta), float(gamma), grid

    def forward(
        self,
        student_findings: torch.Tensor,
        teacher_findings: torch.Tensor,
        student_global: torch.Tensor | None,
        teacher_global: torch.Tensor | None,
        student_map: torch.Tensor | None,
        teacher_map: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.alpha:
            if student_findings.shape != teacher_findings.shape:
                raise ValueError(f"student and teacher findings logits differ: {tuple(student_findings.shape)} "
                                 f"vs {tuple(teacher_findings.shape)} (trained on other classes?)")
            terms["mlct"] = self.alpha * F.mse_loss(student_findings, teacher_findings.detach().to(student_findings.dtype))
        if self.beta and student_global is not None and teacher_global is not None:
            terms["mcct"] = self.beta * F.mse_loss(student_global, teacher_global.detach().to(student_global.dtype))
        if self.gamma and student_map is not None and teacher_map is not None:
            s, t = match_grids(student_map, teacher_map.detach().to(student_map.dtype), self.grid)
            cells = s.shape[-1] * s.shape[-2]
            terms["attention"] = self.gamma * F.mse_loss(cells * s, cells * t)
        return terms
