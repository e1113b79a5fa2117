"""Distillation losses against hand-computed values and closed forms; feature hooks and adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm, wasserstein_distance

from bundle.distill import FeatureAdapter, FeatureHooks, adapter_key, build_adapters, probe_feature_shapes
from bundle.losses import FeatureKLLoss, FeatureWassersteinLoss, HardLabelLoss, SoftLabelLoss
from bundle.networks import ThreeConvStudent


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- soft labels


def test_soft_label_multiclass_is_t2_kl_batchmean():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [0.5, 0.5, 1.0]]
    temp = 2.0
    kl = 0.0
    for s_row, t_row in zip(s, t):
        p, q = _softmax(t_row, temp), _softmax(s_row, temp)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = temp**2 * kl / 2
    loss = SoftLabelLoss("multiclass", temperature=temp)(torch.tensor(s), torch.tensor(t))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert SoftLabelLoss("multiclass", 20.0)(torch.tensor(t), torch.tensor(t)).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_label_multilabel_is_t2_bernoulli_kl_with_the_bce_gradient():
    s = [[1.0, -2.0], [0.5, 3.0]]
    t = [[2.0, 0.0], [-1.0, 4.0]]
    temp = 2.0

    def bce(x: float, q: float) -> float:
        return -(q * math.log(_sigmoid(x)) + (1 - q) * math.log(1 - _sigmoid(x)))

    def kl(x: float, q: float) -> float:  # BCE against the soft label minus the soft label's entropy
        return bce(x, q) - bce(math.log(q / (1 - q)), q)

    terms = [[kl(si / temp, _sigmoid(ti / temp)) for si, ti in zip(sr, tr)] for sr, tr in zip(s, t)]
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # default: the mask is ignored, soft labels apply to every label
    loss = SoftLabelLoss("multilabel", temperature=temp)(torch.tensor(s), torch.tensor(t), mask)
    assert loss.item() == pytest.approx(temp**2 * sum(map(sum, terms)) / 4, rel=1e-5)
    # use_mask: mean over the three known labels
    masked = SoftLabelLoss("multilabel", temperature=temp, use_mask=True)(torch.tensor(s), torch.tensor(t), mask)
    known = terms[0][0] + terms[1][0] + terms[1][1]
    assert masked.item() == pytest.approx(temp**2 * known / 3, rel=1e-5)
    # a student that equals its teacher is at 0 (the BCE alone logs T^2 times the teacher's entropy)
    teacher = torch.randn(8, 14) * 4
    assert SoftLabelLoss("multilabel", 20.0)(teacher, teacher).item() == pytest.approx(0.0, abs=1e-4)
    # the gradient is the paper's BCE term's
    student = torch.tensor(s, requires_grad=True)
    SoftLabelLoss("multilabel", temperature=temp)(student, torch.tensor(t)).backward()
    reference = torch.tensor(s, requires_grad=True)
    q = torch.sigmoid(torch.tensor(t) / temp)
    (torch.nn.functional.binary_cross_entropy_with_logits(reference / temp, q) * temp**2).backward()
    torch.testing.assert_close(student.grad, reference.grad)


def test_soft_label_teacher_mask_leaves_samples_without_a_teacher_answer_out():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    for task in ("multilabel", "multiclass"):
        loss = SoftLabelLoss(task, temperature=4.0)
        only_two = loss(s, t, teacher_mask=torch.tensor([1.0, 0.0, 1.0, 0.0]))
        assert only_two.item() == pytest.approx(loss(s[[0, 2]], t[[0, 2]]).item(), rel=1e-5)
        assert loss(s, t, teacher_mask=torch.zeros(4)).item() == 0.0


def test_soft_label_t2_keeps_gradient_scale_across_temperatures():
    torch.manual_seed(0)
    s, t = 0.1 * torch.randn(4, 5), 0.1 * torch.randn(4, 5)
    for task in ("multiclass", "multilabel"):
        norms = []
        for temp in (10.0, 40.0):
            logits = s.clone().requires_grad_(True)
            SoftLabelLoss(task, temperature=temp)(logits, t).backward()
            norms.append(logits.grad.norm().item())
        # without T^2 the ratio would be ~16
        assert norms[0] / norms[1] == pytest.approx(1.0, rel=0.02)


def test_soft_label_does_not_backpropagate_into_teacher():
    teacher = torch.randn(2, 3, requires_grad=True)
    student = torch.randn(2, 3, requires_grad=True)
    SoftLabelLoss("multiclass", 4.0)(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ValueError, match="task"):
        SoftLabelLoss("regression")


# ---------------------------------------------------------------- feature KL


def test_feature_kl_matches_hand_computed_value():
    s = [0.0, 1.0, 2.0, 3.0]
    t = [1.0, 0.0, 0.0, 1.0]
    temp = 2.0
    p, q = _softmax(t, temp), _softmax(s, temp)
    expected = temp**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = FeatureKLLoss(temperature=temp)(torch.tensor(s).reshape(1, 1, 2, 2), torch.tensor(t).reshape(1, 1, 2, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_feature_kl_zero_for_identical_positive_otherwise():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert FeatureKLLoss()(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert FeatureKLLoss()(a, b).item() > 0
    # softmax is shift-invariant: a constant per channel changes nothing
    assert FeatureKLLoss()(a + 5.0, a).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        FeatureKLLoss()(a, torch.randn(2, 3, 2, 2))


# ---------------------------------------------------------------- Wasserstein


def _gaussian_map(means: list[list[float]], stds: list[list[float]], seed: int, side: int = 64) -> torch.Tensor:
    """N x C x side x side map whose every channel holds the quantiles of N(m, s^2), shuffled."""
    n = side * side
    z = norm.ppf((np.arange(n) + 0.5) / n)
    rng = np.random.default_rng(seed)
    rows = [[m + s * rng.permutation(z) for m, s in zip(mr, sr)] for mr, sr in zip(means, stds)]
    return torch.tensor(np.array(rows), dtype=torch.float32).reshape(len(means), len(means[0]), side, side)


def test_wasserstein_2_matches_gaussian_closed_form():
    m1, s1 = [[0.5, -1.0], [2.0, 0.0]], [[1.0, 0.5], [1.5, 3.0]]
    m2, s2 = [[-0.3, -1.0], [2.5, 1.0]], [[2.0, 0.5], [1.0, 1.0]]
    student, assistant = _gaussian_map(m1, s1, seed=0), _gaussian_map(m2, s2, seed=1)
    closed = [
        math.sqrt((a - b) ** 2 + (c - d) ** 2)
        for ma, mb, sa, sb in zip(m1, m2, s1, s2)
        for a, b, c, d in zip(ma, mb, sa, sb)
    ]
    loss = FeatureWassersteinLoss("sorted", p=2)(student, assistant)
    assert loss.item() == pytest.approx(sum(closed) / len(closed), rel=1e-2)
    # a single channel, checked on its own
    one = FeatureWassersteinLoss(p=2)(student[:1, :1], assistant[:1, :1])
    assert one.item() == pytest.approx(math.sqrt(0.8**2 + 1.0**2), rel=1e-2)


def test_wasserstein_1_equal_variance_is_mean_shift():
    student = _gaussian_map([[0.7]], [[1.3]], seed=2)
    assistant = _gaussian_map([[-0.4]], [[1.3]], seed=3)
    assert FeatureWassersteinLoss(p=1)(student, assistant).item() == pytest.approx(1.1, rel=1e-2)


def test_wasserstein_1_matches_scipy_on_random_maps():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1, 1, 8, 8)), rng.exponential(size=(1, 1, 8, 8))
    expected = wasserstein_distance(a.ravel(), b.ravel())
    loss = FeatureWassersteinLoss(p=1)(torch.tensor(a), torch.tensor(b))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_wasserstein_is_a_distribution_distance():
    torch.manual_seed(0)
    s, a = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    shuffled = s.flatten(2)[..., torch.randperm(64)].reshape(2, 3, 8, 8)
    for loss in (FeatureWassersteinLoss(p=1), FeatureWassersteinLoss(p=2),
                 FeatureWassersteinLoss("sliced", p=2, resample=False)):
        assert loss(shuffled, a).item() == pytest.approx(loss(s, a).item(), rel=1e-5)
        assert loss(s, s).item() == pytest.approx(0.0, abs=1e-6)


def test_wasserstein_gradient_flows_to_student_only():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    a = torch.randn(2, 3, 4, 4, requires_grad=True)
    FeatureWassersteinLoss(p=2)(s, a).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and a.grad is None
    # identical maps: zero loss and a zero, finite gradient (safe root for p = 2)
    same = s.detach().clone().requires_grad_(True)
    FeatureWassersteinLoss(p=2)(same, s.detach()).backward()
    assert torch.isfinite(same.grad).all() and same.grad.abs().sum() == 0


def test_wasserstein_rejects_mismatched_maps():
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\).*\(1, 2, 2, 2\)"):
        FeatureWassersteinLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError):
        FeatureWassersteinLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="estimator"):
        FeatureWassersteinLoss("sinkhorn")


def test_sliced_wasserstein_zero_identical_and_equals_sorted_for_one_channel():
    torch.manual_seed(0)
    s, a = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    sliced = FeatureWassersteinLoss("sliced", p=2, num_projections=16, seed=1)
    assert sliced(s, s).item() == pytest.approx(0.0, abs=1e-6)
    assert sliced(s, a).item() > 0
    for p in (1, 2):
        one_s, one_a = s[:, :1], a[:, :1]
        expected = FeatureWassersteinLoss("sorted", p=p)(one_s, one_a).item()
        got = FeatureWassersteinLoss("sliced", p=p, num_projections=8)(one_s, one_a).item()
        assert got == pytest.approx(expected, rel=1e-5)
    # seeded: two losses with the same seed agree call for call
    first, second = (FeatureWassersteinLoss("sliced", seed=7) for _ in range(2))
    assert first(s, a).item() == second(s, a).item()


# ---------------------------------------------------------------- hooks and adapters


def test_feature_hooks_capture_student_blocks():
    student = ThreeConvStudent(in_channels=1, out_channels=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with FeatureHooks(student, ["conv1", "conv2", "conv3"]) as hooks:
        student(x)
        shapes = {name: tuple(f.shape) for name, f in hooks.features.items()}
        assert shapes == {"conv1": (2, 64, 16, 16), "conv2": (2, 64, 8, 8), "conv3": (2, 128, 4, 4)}
        assert torch.equal(hooks.features["conv2"], student.conv2(student.conv1(x)))
        hooks.clear()
        assert hooks.features == {}
    # the context manager removed the hooks: nothing is captured any more
    student(x)
    assert hooks.features == {}


def test_feature_hooks_remove_and_unknown_name():
    student = ThreeConvStudent()
    hooks = FeatureHooks(student, ["conv3"])
    student(torch.zeros(1, 1, 32, 32))
    assert set(hooks.features) == {"conv3"}
    hooks.remove()
    hooks.clear()
    student(torch.zeros(1, 1, 32, 32))
    assert hooks.features == {}
    with pytest.raises(ValueError, match=r"'conv4'.*conv"):
        FeatureHooks(student, ["conv4"])


def test_feature_adapter_maps_channels_and_size():
    adapter = FeatureAdapter(64, 256, size=(8, 8))
    x = torch.randn(2, 64, 16, 16)
    y = adapter(x)
    assert y.shape == (2, 256, 8, 8)
    # downsampling is average pooling, which commutes with the 1x1 convolution
    reference = torch.nn.functional.avg_pool2d(adapter.conv(x), 2)
    assert torch.allclose(y, reference, atol=1e-5)
    assert FeatureAdapter(64, 32, size=32)(x).shape == (2, 32, 32, 32)
    assert FeatureAdapter(64, 32)(x).shape == (2, 32, 16, 16)


def test_probe_densenet121_shapes_and_restore_mode():
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).train()
    names = ["features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4"]
    running_mean = net.features.norm0.running_mean.clone()
    shapes = probe_feature_shapes(net, names, (1, 64, 64))
    assert shapes == {
        "features.denseblock1": (256, 16, 16),
        "features.denseblock2": (512, 8, 8),
        "features.denseblock3": (1024, 4, 4),
        "features.denseblock4": (1024, 2, 2),
    }
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(net.features.norm0.running_mean, running_mean)
    # a frozen submodule stays in eval mode
    net.features.norm0.eval()
    probe_feature_shapes(net, names[:1], (1, 64, 64))
    assert net.training and not net.features.norm0.training
    with pytest.raises(ValueError, match="denseblock5"):
        probe_feature_shapes(net, ["features.denseblock5"], (1, 64, 64))


def test_adapters_and_losses_end_to_end():
    student = ThreeConvStudent(in_channels=1, out_channels=2)
    student_names = ["conv1", "conv2", "conv3"]
    teacher_shapes = {"a": (256, 16, 16), "b": (512, 8, 8), "c": (64, 8, 8)}
    student_shapes = probe_feature_shapes(student, student_names, (1, 64, 64))
    pairs = [("conv1", "a"), ("conv2", "b"), ("conv2", "c")]
    adapters = build_adapters(student_shapes, teacher_shapes, pairs)
    assert list(adapters) == ["conv1->a", "conv2->b", "conv2->c"]
    assert isinstance(adapters["conv2->c"], torch.nn.Identity)
    assert adapter_key("conv1", "features.denseblock1") == "conv1->features/denseblock1"
    hooks = FeatureHooks(student, student_names)
    logits = student(torch.randn(2, 1, 64, 64))
    loss = HardLabelLoss("multilabel")(logits, torch.ones(2, 2))
    for s_name, t_name in pairs:
        mapped = adapters[adapter_key(s_name, t_name)](hooks.features[s_name])
        loss = loss + FeatureWassersteinLoss(p=2)(mapped, torch.randn(2, *teacher_shapes[t_name]))
    loss.backward()
    assert student.conv1[0].weight.grad.abs().sum() > 0
    assert adapters["conv1->a"].conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="'d'"):
        build_adapters(student_shapes, teacher_shapes, [("conv1", "d")])

