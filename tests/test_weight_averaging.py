"""A moving average of the weights (``--ema_momentum``): what is averaged, validated, saved and resumed."""

from __future__ import annotations

import copy
import json

import torch
from ignite.engine import Engine, Events

from bundle.distill.features import FeatureHooks
from bundle.handlers import WeightAveraging
from bundle.networks import ThreeConvStudent, hookless_copy
from conftest import run_bundle

TINY = {"dataset_options": {"num_images": 24}, "image_size": 32, "batch_size": 8, "num_workers": 0, "device": "cpu"}


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_the_average_follows_the_formula_and_averages_batch_norm_statistics_too():
    torch.manual_seed(0)
    network = ThreeConvStudent(1, 3)
    averaging = WeightAveraging(network, momentum=0.25)
    expected = {name: value.clone() for name, value in network.state_dict().items()}
    optimizer = torch.optim.SGD(network.parameters(), lr=0.5)

    def step(engine, _):
        network.train()
        optimizer.zero_grad()
        network(torch.rand(4, 1, 32, 32)).square().mean().backward()
        optimizer.step()

    trainer = Engine(step)
    averaging.attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def reference(engine):  # attached after the handler: sees the update just made
        for name, value in network.state_dict().items():
            if value.is_floating_point():
                expected[name] = 0.75 * expected[name] + 0.25 * value

    trainer.run([0] * 3, max_epochs=1)
    averaged = averaging.ema_model.state_dict()
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(averaged[name], value, msg=name)
    assert any("running_mean" in name for name in expected)  # batch norm's statistics were among them
    assert not torch.equal(averaged["classifier.weight"], network.state_dict()["classifier.weight"])
    assert abs(averaging.half_life - 2.41) < 0.01  # 0.75 ** 2.41 = 0.5
    assert not any(p.requires_grad for p in averaging.ema_model.parameters())


def test_batch_norm_statistics_are_re_estimated_for_the_averaged_weights_after_each_epoch():
    torch.manual_seed(0)
    network = ThreeConvStudent(1, 3)
    batches = [{"image": torch.rand(4, 1, 32, 32)} for _ in range(3)]
    averaging = WeightAveraging(network, momentum=0.5, batch_norm_loader=batches)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05)

    def step(engine, batch):
        network.train()
        optimizer.zero_grad()
        network(batch["image"]).square().mean().backward()
        optimizer.step()

    trainer = Engine(step)
    averaging.attach(trainer)
    trainer.run(batches, max_epochs=2)
    trained_statistics = network.conv1[1].running_mean.clone()

    # what torch's SWA re-estimation gives for the same averaged weights on the same data
    reference = copy.deepcopy(averaging.ema_model)
    torch.optim.swa_utils.update_bn((b["image"] for b in batches), reference)
    for (name, value), expected in zip(averaging.ema_model.named_buffers(), reference.buffers()):
        if value.is_floating_point():
            torch.testing.assert_close(value, expected, msg=name)
    assert not torch.allclose(averaging.ema_model.conv1[1].running_mean, trained_statistics)
    assert torch.equal(network.conv1[1].running_mean, trained_statistics)  # the trained network's are its own
    assert not averaging.ema_model.training


def test_the_copies_leave_the_distillers_feature_hooks_on_the_trained_network_only():
    network = ThreeConvStudent(1, 3)
    hooks = FeatureHooks(network, ["conv1", "conv3"])
    for duplicate in (WeightAveraging(network, momentum=0.1).ema_model, hookless_copy(network)):
        duplicate(torch.rand(2, 1, 32, 32))
        assert not hooks.features  # the copy ran no hook of the trained network
        assert all(not module._forward_hooks for module in duplicate.modules())
    network(torch.rand(2, 1, 32, 32))
    assert set(hooks.features) == {"conv1", "conv3"}  # the trained network still has its hooks


def test_training_validates_saves_and_resumes_the_average(tmp_path):
    """model.pt, model_final.pt and the validation metrics are the average's; a resumed run goes on from it."""
    settings = {**TINY, "ema_momentum": 0.3, "train#lr_scheduler#T_max": 2}
    straight = run_bundle("configs/student.json", "training", tmp_path / "straight", max_epochs=2, **settings)
    trained = straight.parser.get_parsed_content("network")
    averaged = straight.parser.get_parsed_content("validated_network")
    assert averaged is not trained
    assert straight.parser.get_parsed_content("validate#evaluator").network is averaged
    final = _weights(tmp_path / "straight" / "model_final.pt")
    for name, value in averaged.state_dict().items():
        assert torch.equal(final[name], value), name
    assert not torch.equal(final["classifier.weight"], trained.state_dict()["classifier.weight"])
    log = (tmp_path / "straight" / "log.txt").read_text()
    assert "moving average of the weights (momentum 0.3" in log and "batch-norm statistics re-estimated" in log
    assert "averaged_network" in _weights(tmp_path / "straight" / "checkpoints" / "last.pt")

    # the same two epochs in two runs: the average is restored from last.pt, so the result is the same
    resumed = tmp_path / "resumed"
    run_bundle("configs/student.json", "training", resumed, max_epochs=1, **settings)
    run_bundle("configs/student.json", "training", resumed, max_epochs=2, **settings)
    again = _weights(resumed / "model_final.pt")
    for name, value in final.items():
        assert torch.equal(value, again[name]), name
    assert (json.loads((resumed / "metrics.json").read_text())
            == json.loads((tmp_path / "straight" / "metrics.json").read_text()))


def test_evaluation_scores_the_saved_checkpoint_with_or_without_the_flag(tmp_path):
    run_bundle("configs/student.json", "training", tmp_path, max_epochs=1, ema_momentum=0.3, **TINY)
    scores = []
    for flag in ({}, {"ema_momentum": 0.3}):  # the training command's flags repeated, or not
        run_bundle(["configs/student.json", "configs/evaluate.json"], "evaluating", tmp_path, max_epochs=1,
                   **{**TINY, **flag})
        scores.append(json.loads((tmp_path / "eval" / "metrics.json").read_text())["auc_macro"])
    assert scores[0] == scores[1]


def test_the_vit_stage_validates_the_average_of_its_two_heads(tmp_path):
    from bundle.stages import stage_configs

    micro = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}
    settings = {**TINY, "image_size": 16, "token_grid": 2, "vit_size": micro, "max_epochs": 1, "ema_momentum": 0.3}
    student = run_bundle(stage_configs("vit_student"), "training", tmp_path, **settings)
    averaged = student.parser.get_parsed_content("validated_network")
    assert averaged is not student.parser.get_parsed_content("network")
    assert student.parser.get_parsed_content("validate#evaluator").network is averaged
    saved = _weights(tmp_path / "model_final.pt")
    for name, value in averaged.state_dict().items():
        assert torch.equal(saved[name], value), name
    assert "mlct/auc_macro" in json.loads((tmp_path / "metrics.json").read_text())
