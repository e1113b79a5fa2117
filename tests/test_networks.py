"""Network size, cost and input-size checks."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import ThreeConvStudent, check_input_size, count_flops, count_parameters


def test_flops_of_a_convolution_match_the_closed_form():
    conv = torch.nn.Conv2d(1, 8, kernel_size=3, padding=1, bias=False)
    # 2 FLOPs per multiply-add: 2 * (H * W) * C_out * C_in * k * k
    assert count_flops(conv, (1, 16, 16)) == 2 * 16 * 16 * 8 * 1 * 3 * 3
    student = ThreeConvStudent(in_channels=1, out_channels=5)
    assert count_parameters(student) == sum(p.numel() for p in student.parameters())
    # FLOPs grow with the input area: 4x the pixels, 4x the convolution work (up to the tiny linear head)
    small, large = count_flops(student, (1, 64, 64)), count_flops(student, (1, 128, 128))
    assert 3.9 < large / small < 4.01
    assert student.training  # the mode is restored


def test_check_input_size_names_the_smallest_size_that_works():
    class NeedsEight(torch.nn.Module):
        def forward(self, x):
            if x.shape[-1] < 8:
                raise RuntimeError("too small")
            return x.mean()

    network = torch.nn.Sequential(torch.nn.Identity(), NeedsEight())
    network.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    assert check_input_size(network, 8) is network
    with pytest.raises(ValueError, match=r"cannot take image_size 4 px.* is 16 px.*too small"):
        check_input_size(network, 4, candidates=(4, 16, 32))
