"""MLCAK's pieces: the ViT and its attention map, the head layout, the two losses, the two-head metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from bundle.losses import MLCAKLoss, MultiTaskLoss, match_grids
from bundle.metrics import MultiTaskMetrics
from bundle.networks import CXRViT, HeadLayout, vit_patch_size
from bundle.networks.vit import ExplicitAttention

MICRO = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "mlp_dim": 64}
PHANTOM_CLASSES = ["Nodule", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumothorax"]


def test_patch_size_keeps_a_seven_by_seven_grid_and_rejects_what_does_not_divide():
    assert [vit_patch_size(s) for s in (28, 56, 112)] == [4, 8, 16]
    assert vit_patch_size(28, token_grid=14) == 2
    with pytest.raises(ValueError, match="cannot be cut into a 5 x 5"):
        vit_patch_size(28, token_grid=5)
    with pytest.raises(ValueError, match="does not divide"):
        CXRViT(image_size=28, patch_size=8)


def test_explicit_attention_equals_pytorch_fused_attention_and_keeps_the_class_row():
    torch.manual_seed(0)
    attention = ExplicitAttention(hidden_size=16, num_heads=2)
    x = torch.randn(3, 5, 16)
    out = attention(x)
    q, k, v = attention.qkv(x).reshape(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    fused = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 5, 16)
    torch.testing.assert_close(out, attention.proj(fused), rtol=1e-5, atol=1e-6)
    expected_rows = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)[:, :, 0, 1:]
    torch.testing.assert_close(attention.cls_attention, expected_rows)
    assert attention.cls_attention.shape == (3, 2, 4)  # (N, heads, patches): the class token's own weight left out


def test_mean_attention_map_is_the_mean_over_layers_and_heads_of_renormalised_class_rows():
    torch.manual_seed(0)
    net = CXRViT(image_size=28, patch_size=4, num_findings=5, size=MICRO)
    logits = net(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 7) and net.num_outputs == 7
    rows = net.cls_attentions()
    assert rows.shape == (2, 3, 2, 49)  # N, layers, heads, patches (7 x 7)
    assert bool((rows.sum(-1) < 1).all())  # the class token attends to itself too
    full = net.attention_map("all")
    assert full.shape == (2, 7, 7)
    torch.testing.assert_close(full.sum(dim=(1, 2)), torch.ones(2))
    manual = (rows / rows.sum(-1, keepdim=True)).mean(dim=(1, 2)).reshape(2, 7, 7)
    torch.testing.assert_close(full, manual)
    last = net.attention_map("last")
    torch.testing.assert_close(last, (rows[:, -1] / rows[:, -1].sum(-1, keepdim=True)).mean(1).reshape(2, 7, 7))
    assert not torch.allclose(last, full)
    # the map carries gradients back into the attention projections (MONAI's save_attn would not)
    (full * torch.arange(49.0).reshape(7, 7)).sum().backward()
    assert net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_explain_upsamples_to_the_input_and_the_network_names_its_input_size():
    net = CXRViT(image_size=28, patch_size=4, num_findings=2, heads=1, size=MICRO)
    logits, maps = net.explain(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 2) and maps.shape == (3, 28, 28) and net.training
    # bilinear upsampling keeps the mean: the 7 x 7 map sums to 1, so the 28 x 28 one averages 1/49
    torch.testing.assert_close(maps.mean(dim=(1, 2)), torch.full((3,), 1 / 49), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="built for N x C x 28 x 28 inputs"):
        net(torch.zeros(1, 1, 32, 32))


def test_head_layout_derives_both_heads_targets():
    # phantoms: multi-label findings; abnormal = any finding; unknown only when no positive and some unknown
    layout = HeadLayout(PHANTOM_CLASSES, "multilabel")
    assert layout.output_names == PHANTOM_CLASSES + ["Normal", "Abnormal"] and layout.num_outputs == 7
    labels = torch.tensor([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 1, 1, 1.0]])
    y_f, m_f, y_g, m_g = layout.targets(labels, mask)
    assert torch.equal(y_f, labels) and torch.equal(m_f, mask)
    assert y_g.tolist() == [[1, 0], [0, 1], [1, 0]] and m_g.tolist() == [[1, 1], [1, 1], [0, 0]]
    # cxr3: multi-class Normal / Pneumonia / COVID-19 -> findings Pneumonia, COVID-19; normal vs not
    cxr3 = HeadLayout(["Normal", "Pneumonia", "COVID-19"], "multiclass")
    assert cxr3.finding_names == ["Pneumonia", "COVID-19"] and cxr3.output_names[-2:] == ["Normal", "Abnormal"]
    y_f, m_f, y_g, m_g = cxr3.targets(torch.tensor([[1, 0, 0], [0, 0, 1.0]]))
    assert y_f.tolist() == [[0, 0], [0, 1]] and y_g.tolist() == [[1, 0], [0, 1]] and m_g.min() == 1
    with pytest.raises(ValueError, match="needs a normal class"):
        HeadLayout(["Pneumonia", "COVID-19"], "multiclass")


def test_head_probabilities_and_the_one_head_global_probability():
    layout = HeadLayout(PHANTOM_CLASSES, "multilabel")
    p = layout.probabilities(torch.tensor([0.0, 0, 0, 0, 0, 1, 1]))
    assert p.shape == (7,) and torch.allclose(p[:5], torch.full((5,), 0.5)) and torch.allclose(p[5:], torch.tensor([0.5, 0.5]))
    one = HeadLayout(PHANTOM_CLASSES, "multilabel", heads=1)
    # noisy-OR: P(normal) = prod (1 - p_f) = 0.5^5
    g = one.global_probabilities(torch.zeros(1, 5))
    torch.testing.assert_close(g, torch.tensor([[0.5**5, 1 - 0.5**5]]))
    with pytest.raises(ValueError, match="expected 5 outputs"):
        one.split(torch.zeros(1, 7))


def test_multitask_loss_against_hand_computed_values():
    layout = HeadLayout(["A", "B"], "multilabel")
    loss = MultiTaskLoss(layout, head_weights={"mcct": 2.0})
    logits = torch.tensor([[2.0, -1.0, 0.0, 1.0]])
    terms = loss(logits, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    # findings: only A is known: BCE(2, 1) = log(1 + e^-2)
    assert math.isclose(float(terms["hard/mlct"]), math.log1p(math.exp(-2)), rel_tol=1e-6)
    # global: abnormal (A positive) -> target [0, 1]: (BCE(0, 0) + BCE(1, 1)) / 2, times weight 2
    expected = 2 * (math.log(2) + math.log1p(math.exp(-1))) / 2
    assert math.isclose(float(terms["hard/mcct"]), expected, rel_tol=1e-6)
    assert set(MultiTaskLoss(HeadLayout(["A", "B"], "multilabel", heads=1))(logits[:, :2], torch.ones(1, 2))) == {"hard/mlct"}
    with pytest.raises(ValueError, match="class_weights"):
        MultiTaskLoss(layout, class_weights="balanced")


def test_match_grids_averages_the_teachers_blocks_and_renormalises():
    teacher = torch.zeros(1, 4, 4)
    teacher[0, :2, :2], teacher[0, :2, 2:], teacher[0, 2:, :2], teacher[0, 2:, 2:] = 0.1, 0.025, 0.025, 0.1
    student = torch.full((1, 2, 2), 0.25)
    s, t = match_grids(student, teacher)
    torch.testing.assert_close(t, torch.tensor([[[0.4, 0.1], [0.1, 0.4]]]))  # 2 x 2 block means, summing to 1
    torch.testing.assert_close(s, student)
    s_up, t_same = match_grids(student, teacher, grid="teacher")
    assert s_up.shape == (1, 4, 4) and torch.allclose(s_up, torch.full((1, 4, 4), 1 / 16)) and torch.equal(t_same, teacher)


def test_mlcak_loss_against_hand_computed_values():
    loss = MLCAKLoss(alpha=2.0, beta=0.5, gamma=3.0)
    teacher = torch.zeros(1, 4, 4)
    teacher[0, :2, :2], teacher[0, :2, 2:], teacher[0, 2:, :2], teacher[0, 2:, 2:] = 0.1, 0.025, 0.025, 0.1
    student_map = torch.full((1, 2, 2), 0.25, requires_grad=True)
    terms = loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 3.0]]),  # MSE = (1 + 4) / 2 = 2.5
                 torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]]),  # MSE = 1
                 student_map, teacher)
    assert math.isclose(float(terms["mlct"]), 2.0 * 2.5)
    assert math.isclose(float(terms["mcct"]), 0.5 * 1.0)
    # maps scaled to mean 1 on the 2 x 2 grid: student all 1, teacher [[1.6, 0.4], [0.4, 1.6]] -> MSE 0.36
    assert math.isclose(float(terms["attention"].detach()), 3.0 * 0.36, rel_tol=1e-6)
    terms["attention"].backward()
    assert student_map.grad.abs().sum() > 0
    # no global head on one side, or a zero weight: the term is left out
    assert set(MLCAKLoss(gamma=0.0)(torch.zeros(1, 2), torch.zeros(1, 2), None, torch.zeros(1, 2), None, None)) == {"mlct"}


def test_multitask_metrics_report_both_heads_macro_auc():
    layout = HeadLayout(["Normal", "Pneumonia", "COVID-19"], "multiclass")
    metric = MultiTaskMetrics(layout)
    metric.reset()
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0.0]])
    # findings logits rank perfectly; the global head calls one normal image abnormal (AUC 0.75)
    logits = torch.tensor([[-3, -3, 2, -2.0], [3, -3, -2, 2], [-3, 3, -2, 2], [-2, 2, -2, 2], [-3, -3, -2, 2]])
    metric.update((logits, labels, torch.ones_like(labels)))
    scalars = metric.report()["scalars"]
    assert scalars["mlct/auc_macro"] == 1.0 and set(k for k in scalars if k.startswith("mlct/auc/")) == {
        "mlct/auc/Pneumonia", "mlct/auc/COVID-19"}
    abnormal = labels[:, 0] == 0
    expected = roc_auc_score(abnormal.numpy(), torch.softmax(logits[:, 2:], 1)[:, 1].numpy())
    assert math.isclose(scalars["mcct/auc_macro"], expected) and math.isclose(expected, 0.75)
    assert math.isclose(scalars["auc_macro"], (1.0 + expected) / 2)
    assert np.isfinite(scalars["mcct/accuracy"]) and scalars["accuracy"] == scalars["mcct/accuracy"]


def test_conv_stem_reaches_the_same_token_grid_and_needs_a_power_of_two_patch():
    conv = CXRViT(image_size=56, patch_size=8, num_findings=2, size=MICRO, stem="conv")
    plain = CXRViT(image_size=56, patch_size=8, num_findings=2, size=MICRO, stem="patch")
    x = torch.rand(2, 1, 56, 56)
    for net in (conv, plain):
        assert net(x).shape == (2, 4) and net.attention_map().shape == (2, 7, 7)
    assert conv.patch_embedding(torch.zeros(1, 1, 56, 56)).shape == (1, 32, 7, 7)
    with pytest.raises(ValueError, match="power-of-2 patch size"):
        CXRViT(image_size=42, patch_size=6, size=MICRO, stem="conv")
    # per-image standardisation: exposure (gain and offset) does not change the output
    conv.eval()
    torch.testing.assert_close(conv(x), conv(0.5 * x + 0.2), rtol=1e-4, atol=1e-4)
