"""Which classes Grad-CAM explains, and that saturated probabilities do not cost a second pass."""

from __future__ import annotations

import torch

from bundle.handlers.saliency import SaliencyWriter, saliency_targets


def test_ties_of_saturated_probabilities_are_broken_by_the_logits():
    probabilities = torch.tensor([[1.0, 1.0, 0.2]])  # float32 sigmoid of logits 20 and 30
    logits = torch.tensor([[20.0, 30.0, -1.4]])
    assert saliency_targets(probabilities, "multilabel", 0.5, max_classes=1) == [[0]]
    assert saliency_targets(probabilities, "multilabel", 0.5, max_classes=1, ranking=logits) == [[1]]
    assert saliency_targets(probabilities, "multilabel", 0.5, max_classes=3, ranking=logits) == [[1, 0]]


class _Saturated(torch.nn.Module):
    """A conv layer and a head whose two first logits saturate the sigmoid: 1.0 in float32 for both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([40.0, 50.0, -3.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_the_top_class_map_comes_from_the_prediction_pass_alone(tmp_path):
    network = _Saturated().eval()
    writer = SaliencyWriter(network, "conv", tmp_path, ["a", "b", "c"], max_classes=1)
    calls = []
    cam_class = type(writer.cam)  # called through its class: count the calls with a subclass

    class Counting(cam_class):
        def __call__(self, *args, **kwargs):
            calls.append(kwargs.get("class_idx"))
            return super().__call__(*args, **kwargs)

    writer.cam.__class__ = Counting
    logits, maps = writer.explain(torch.rand(2, 1, 16, 16))
    assert torch.sigmoid(logits)[:, :2].eq(1.0).all(), "the probabilities tie"
    assert [list(m) for m in maps] == [[1], [1]], "the logits' arg-max is explained"
    assert calls == [None], "one Grad-CAM pass: the prediction's own"
