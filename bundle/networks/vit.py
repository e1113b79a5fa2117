"""A Vision Transformer whose attention maps can be distilled: the networks of MLCAK.

Akhter et al., "Low-Resolution Chest X-ray Classification via Knowledge Distillation and
Multi-task Learning" (arXiv 2405.13370): a ViT teacher sees 224 px radiographs, a ViT student
the same radiographs at 112, 56 or 28 px; both have two heads on the class token (multi-label
findings, "MLCT", and multi-class normal/abnormal, "MCCT"), and the student learns the
teacher's mean self-attention map over all encoder layers ("MLCAK").

Why not MONAI's ``ViT``: its ``SABlock(save_attn=True)`` keeps ``att_mat.detach()``, so a loss
on the student's attention would have no gradient; and fused attention
(``F.scaled_dot_product_attention``, flash attention) never materialises the attention matrix
at all. :class:`ExplicitAttention` computes ``softmax(Q K^T / sqrt(d))`` itself and keeps the
class token's row, with its autograd graph, from the latest forward pass. Everything else is a
standard pre-norm ViT (Dosovitskiy et al. 2021): a convolutional patch embedding, a learnable
class token and position embedding, ``num_layers`` blocks of attention + MLP, a final
LayerNorm, and linear heads on the class token.

Input standardisation: each image is shifted and scaled to zero mean and unit variance inside
the network (``input_norm="image"``), as ViT pipelines normalise their inputs; in the network,
so that training, validation and inference cannot disagree. Radiographs in [0, 1] give every
patch token a large shared constant. Per image rather than with data-set constants, because
exposure (gain, offset) differs from image to image and is no evidence of disease. Measured on
64 phantoms (56 px, 8 px patches, 6 layers 96 wide, AdamW 1e-3, 150 full-batch steps, patch
stem): raw inputs: training BCE stuck at 0.575 (the entropy of the base rates); standardised
with the data set's mean and std: 0.215; per image: 0.553. Normalisation alone is thus not the
remedy (with data-set constants the network could memorise images by their overall
brightness, which per-image standardisation removes on purpose); the stem is:

Stem: trained from scratch (no pretrained weights can be downloaded here) on a few hundred
radiographs, the plain patch embedding hardly learns: 300 phantoms at 56 px, 8 px patches,
6 layers 96 wide, AdamW 1e-3, 8 epochs: training BCE stayed at the base rate (0.565) and the
validation AUC of Cardiomegaly (an enlarged heart, which the 3-conv CNN finds with AUC 1.0)
was 0.73, flat from the second epoch on. With a convolutional stem (:class:`ConvStem`; Xiao
et al. 2021) it rose to 0.91 in the same 8 epochs (0.89 after 20 epochs with warm-up, training
BCE 0.524). So ``stem="conv"`` is the default; ``stem="patch"`` is the plain ViT. Both give the
same token grid, and the attention, its maps and MLCAK are the same.

Sizes (:data:`VIT_SIZES`, as in DeiT / timm): ``tiny`` (192 wide, 12 layers, 3 heads),
``small`` (384, 12, 6), ``base`` (768, 12, 12); or a dict of ``hidden_size``, ``num_layers``,
``num_heads``, ``mlp_dim`` (the tests use a 2-layer, 32-wide one).

Patch size and token grid: the teacher at 224 px uses 16 px patches (a 14 x 14 grid, the
standard ViT). The student's patch is chosen per resolution so that the token grid stays
``token_grid`` x ``token_grid`` (default 7): :func:`vit_patch_size` gives 4 px patches at
28 px, 8 at 56 and 16 at 112. At 28 px a 16 px patch would leave one token (and 28 is not a
multiple of 8 or 16); 7 x 7 tokens of 4 x 4 pixels keep a spatial map to distil and to show,
and the student's cost then does not grow with its input (49 tokens at every resolution, a
quarter of the teacher's 196). The teacher's 14 x 14 map is brought to the student's 7 x 7 grid
by exact 2 x 2 averaging (:func:`bundle.losses.mlcak.match_grids`). ``--token_grid 14`` gives
the student the teacher's grid instead (2 px patches at 28 px; no resize at all).

Attention map (MLCAK): for layer ``l`` and head ``h`` let ``a_lh`` be the class token's
attention row restricted to the ``P`` patch tokens and renormalised to sum 1 (the class
token's attention to itself is left out: it has no position in the image). The map is

    MLCAK = (1 / (L H)) * sum_{l in layers} sum_h a_lh           (a g x g map summing to 1)

with ``layers`` all encoder layers (``"all"``, the paper's MLCAK) or the last one (``"last"``,
the ablation). Class-token attention, not the full token-token matrix, because it is a map
over image positions: it can be resized between the teacher's and the student's grids and
overlaid on the image, which a T x T matrix (197 x 197 against 50 x 50) cannot.

Outputs: one logits tensor ``(N, F + 2)``: the ``F`` findings (MLCT) then ``Normal``,
``Abnormal`` (MCCT); with ``heads=1`` only the ``F`` findings. One tensor, because the
engines, checkpoints, the teacher cache and inference all pass one; which column is which is
:class:`~bundle.networks.heads.HeadLayout`'s business.

Config example::

    "network_def": {"_target_": "bundle.networks.CXRViT", "image_size": 28, "patch_size": 4,
                    "num_findings": 5, "heads": 2, "size": "tiny"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VIT_SIZES", "CXRViT", "ConvStem", "ExplicitAttention", "vit_patch_size", "attention_layer_indices"]

VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 192, "num_layers": 12, "num_heads": 3, "mlp_dim": 768},
    "small": {"hidden_size": 384, "num_layers": 12, "num_heads": 6, "mlp_dim": 1536},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "mlp_dim": 3072},
}


def vit_patch_size(image_size: int, token_grid: int = 7) -> int:
    """The patch size that gives a ``token_grid`` x ``token_grid`` grid at ``image_size`` px.

    >>> [vit_patch_size(s) for s in (28, 56, 112, 224)]
    [4, 8, 16, 32]
    """
    image_size, token_grid = int(image_size), int(token_grid)
    if token_grid < 1 or image_size % token_grid:
        divisors = [g for g in range(2, image_size + 1) if image_size % g == 0 and g <= 32]
        raise ValueError(f"image_size {image_size} px cannot be cut into a {token_grid} x {token_grid} token grid; "
                         f"grids that divide it: {divisors} (set --token_grid or --patch_size)")
    return image_size // token_grid


def attention_layer_indices(layers: str | int | Sequence[int], num_layers: int) -> list[int]:
    """``"all"`` -> every layer, ``"last"`` -> the last one, or explicit (negative allowed) indices."""
    if isinstance(layers, str):
        if layers == "all":
            return list(range(num_layers))
        if layers == "last":
            return [num_layers - 1]
        raise ValueError(f"attention layers must be 'all', 'last' or indices, got {layers!r}")
    indices = [int(layers)] if isinstance(layers, int) else [int(i) for i in layers]
    if not indices or any(not -num_layers <= i < num_layers for i in indices):
        raise ValueError(f"attention layer indices {indices} out of range for {num_layers} layers")
    return [i % num_layers for i in indices]


class ExplicitAttention(nn.Module):
    """Multi-head self-attention that keeps the class token's attention of its latest call.

    ``cls_attention``: ``(N, heads, P)``, the softmax row of token 0 (the class token) over the
    ``P`` patch tokens (tokens 1..P), before dropout, with its autograd graph when gradients are
    on; None before the first call.
    """

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (hidden_size // num_heads) ** -0.5
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        self.cls_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (N, heads, T, T)
        # a copy, not a view: a view would keep every layer's whole (N, heads, T, T) matrix alive
        self.cls_attention = attention[:, :, 0, 1:].clone()
        x = (self.attn_drop(attention) @ v).transpose(1, 2).reshape(n, t, c)
        return self.proj_drop(self.proj(x))


class ConvStem(nn.Module):
    """Convolutional stem (Xiao et al., "Early convolutions help transformers see better", NeurIPS 2021).

    ``log2(patch)`` stride-2 3 x 3 convolutions with batch norm and ReLU (channels doubling up
    to ``hidden / 2``), then a 1 x 1 convolution to ``hidden``: the same token grid as a
    ``patch x patch`` patch embedding, but optimised far more easily from scratch (Xiao et al.:
    more robust to learning rate and optimiser, faster to converge, better with little data).

    Unlike Xiao et al., a batch norm follows the 1 x 1 convolution. After the ReLUs every token
    carries the same large positive component: in a teacher trained with Xiao et al.'s stem
    (10 epochs on 420 phantoms at 112 px) the tokens' norm was 1.46 against a spread of 0.08
    across tokens, the class token's output varied by 3e-5 across images and the network
    predicted the base rates for every image. The batch norm removes that component per
    channel (on the debug split of :mod:`bundle.networks.vit`'s docstring, training BCE left the
    base-rate plateau: 0.521 after 8 epochs instead of 0.565).
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        steps = int(round(math.log2(patch_size))) if patch_size > 1 else 0
        if 2**steps != patch_size:
            raise ValueError(f"the convolutional stem needs a power-of-2 patch size, got {patch_size}")
        layers: list[nn.Module] = []
        channels = in_channels
        for step in range(steps):
            width = max(hidden_size // 2 ** (steps - step), 8)
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        layers += [nn.Conv2d(channels, hidden_size, kernel_size=1, bias=False), nn.BatchNorm2d(hidden_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, dropout: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = ExplicitAttention(hidden_size, num_heads, qkv_bias, dropout)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_size), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CXRViT(nn.Module):
    """ViT classifier with a multi-label head (findings) and a normal/abnormal head, and its attention map.

    Args:
        in_channels: image channels (1 for radiographs).
        image_size: input side in pixels; the position embedding is sized for it, so the
            network takes exactly this size (anything else is a clear error).
        patch_size: side of a patch; must divide ``image_size`` (see :func:`vit_patch_size`).
        num_findings: outputs of the multi-label head (MLCT).
        heads: 2: also the two-way normal/abnormal head (MCCT) after the findings;
            1: findings only (the one-head ablation).
        size: ``"tiny"``, ``"small"``, ``"base"`` (:data:`VIT_SIZES`) or a dict with
            ``hidden_size``, ``num_layers``, ``num_heads``, ``mlp_dim``.
        dropout: dropout in attention, MLPs and embeddings.
        qkv_bias: bias of the query/key/value projection.
        input_norm: ``"image"``: standardise each image (zero mean, unit variance) first;
            ``"none"``: use the input as it is.
        stem: ``"patch"``: the ViT's patch embedding (one ``patch x patch`` convolution with
            stride ``patch``); ``"conv"``: a convolutional stem (:class:`ConvStem`) that reaches
            the same token grid through stride-2 3 x 3 convolutions (patch sizes that are powers of 2).

    The heads are zero-initialised, so training starts from the uniform prediction (as the
    EfficientNet teacher does; see :class:`~bundle.networks.EfficientNetEnsemble`).

    Example::

        >>> net = CXRViT(image_size=28, patch_size=4, num_findings=5, size="tiny")
        >>> net(torch.zeros(2, 1, 28, 28)).shape, net.attention_map().shape
        (torch.Size([2, 7]), torch.Size([2, 7, 7]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 224,
        patch_size: int = 16,
        num_findings: int = 5,
        heads: int = 2,
        size: str | Mapping[str, int] = "tiny",
        dropout: float = 0.0,
        qkv_bias: bool = True,
        input_norm: str = "image",
        stem: str = "conv",
    ) -> None:
        super().__init__()
        if input_norm not in ("image", "none"):
            raise ValueError(f"input_norm must be 'image' or 'none', got {input_norm!r}")
        self.input_norm = input_norm
        if isinstance(size, str):
            if size not in VIT_SIZES:
                raise ValueError(f"unknown ViT size {size!r}; known: {sorted(VIT_SIZES)} or a dict")
            dims = VIT_SIZES[size]
        else:
            missing = {"hidden_size", "num_layers", "num_heads", "mlp_dim"} - set(size)
            if missing:
                raise ValueError(f"a ViT size dict needs {sorted(missing)}")
            dims = {k: int(size[k]) for k in ("hidden_size", "num_layers", "num_heads", "mlp_dim")}
        if heads not in (1, 2):
            raise ValueError(f"heads must be 1 (findings only) or 2 (findings + normal/abnormal), got {heads}")
        image_size, patch_size = int(image_size), int(patch_size)
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size} "
                             f"(bundle.networks.vit_patch_size picks one for a token grid)")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.num_findings, self.heads = int(num_findings), int(heads)
        self.num_layers = dims["num_layers"]
        hidden = dims["hidden_size"]
        if stem == "patch":
            self.patch_embedding: nn.Module = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        elif stem == "conv":
            self.patch_embedding = ConvStem(in_channels, hidden, patch_size)
        else:
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        self.stem = stem
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, hidden))
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _Block(hidden, dims["num_heads"], dims["mlp_dim"], dropout, qkv_bias) for _ in range(self.num_layers))
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.mlct_head = nn.Linear(hidden, self.num_findings)
        self.mcct_head = nn.Linear(hidden, 2) if self.heads == 2 else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if isinstance(self.patch_embedding, nn.Conv2d):
            fan_in = self.patch_embedding.in_channels * self.patch_size**2
            nn.init.trunc_normal_(self.patch_embedding.weight, std=math.sqrt(1.0 / fan_in))
            nn.init.zeros_(self.patch_embedding.bias)
        for head in (self.mlct_head, self.mcct_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @property
    def num_outputs(self) -> int:
        return self.num_findings + (2 if self.heads == 2 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"this ViT is built for N x C x {self.image_size} x {self.image_size} inputs "
                             f"({self.patch_size} px patches, {self.grid_size} x {self.grid_size} tokens), "
                             f"got {tuple(x.shape)}; set image_size (and patch_size) to the data's size")
        if self.input_norm == "image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-6).sqrt()
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (N, P, hidden), row-major patches
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.embedding_dropout(tokens + self.position_embedding)
        for block in self.blocks:
            tokens = block(tokens)
        cls = self.norm(tokens)[:, 0]
        logits = self.mlct_head(cls)
        if self.mcct_head is not None:
            logits = torch.cat([logits, self.mcct_head(cls)], dim=1)
        return logits

    def cls_attentions(self) -> torch.Tensor:
        """``(N, layers, heads, P)``: every layer's class-token attention to the patches, latest forward."""
        rows = [block.attn.cls_attention for block in self.blocks]
        if any(r is None for r in rows):
            raise RuntimeError("no attention recorded yet: run a forward pass first")
        return torch.stack(rows, dim=1)

    def attention_map(self, layers: str | int | Sequence[int] = "all") -> torch.Tensor:
        """The mean attention map (MLCAK) of the latest forward pass: ``(N, g, g)``, each summing to 1.

        Per layer and head the class token's attention to the patches is renormalised to sum 1,
        then averaged over the heads and the chosen ``layers`` (``"all"``, ``"last"`` or indices).
        Keeps the autograd graph (the student's map is a term of its loss).
        """
        rows = self.cls_attentions()[:, attention_layer_indices(layers, self.num_layers)]
        rows = rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return rows.mean(dim=(1, 2)).reshape(-1, self.grid_size, self.grid_size)

    @torch.no_grad()
    def explain(self, x: torch.Tensor, layers: str | int | Sequence[int] = "all",
                size: int | Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the attention map upsampled to the input (``(N, H, W)``, bilinear), in eval mode.

        Each pixel holds the attention of the patch around it (interpolated between patch
        centres): the ``g x g`` map sums to 1, so a uniform map is ``1 / g^2`` everywhere.
        """
        training = self.training
        self.eval()
        try:
            logits = self(x)
            grid = self.attention_map(layers)
        finally:
            self.train(training)
        size = tuple(x.shape[-2:]) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        upsampled = F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return logits, upsampled
