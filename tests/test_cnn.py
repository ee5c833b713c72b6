"""The ResNet-style CNN of the image workloads: shapes, parameter and FLOP formulas against PyTorch's own
counts, inference independent of batch companions, and a training step that learns."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wattbench.device import detect
from wattbench.models.cnn import MODEL_CONFIGS, CNNConfig, ResNet
from wattbench.workloads import case_by_id, cases

CPU = torch.device("cpu")


def make_model(name="tiny", seed=0):
    return ResNet(MODEL_CONFIGS[name], torch.float32, CPU, torch.Generator().manual_seed(seed))


def images(config, batch, seed=1):
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_logits_have_one_row_per_image_and_one_column_per_class():
    model = make_model()
    assert model(images(model.config, 3)).shape == (3, 10)


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_parameter_count_matches_the_model(name):
    config = MODEL_CONFIGS[name]
    assert config.parameter_count() == sum(p.numel() for p in make_model(name).parameters())


def test_resnet18_preset_is_resnet18():
    assert MODEL_CONFIGS["resnet18"].parameter_count() == 11_689_512  # torchvision's resnet18
    assert MODEL_CONFIGS["resnet18"].forward_flops_per_image() == pytest.approx(3.63e9, rel=0.01)  # 1.81 GMAC


def test_flop_formulas_match_pytorchs_flop_counter():
    model = make_model()
    batch = images(model.config, 2)
    with FlopCounterMode(display=False) as forward:
        model(batch)
    assert forward.get_total_flops() == 2 * model.config.forward_flops_per_image()
    with FlopCounterMode(display=False) as train:
        model(batch).sum().backward()
    assert train.get_total_flops() == 2 * model.config.train_flops_per_image()


def test_config_refuses_bad_sizes():
    with pytest.raises(ValueError, match="widths must be a non-empty tuple"):
        CNNConfig(widths=(), blocks_per_stage=1, image_size=32, classes=10)
    with pytest.raises(ValueError, match="image_size must be at least 1"):
        CNNConfig(widths=(8,), blocks_per_stage=1, image_size=0, classes=10)


def test_inference_does_not_depend_on_the_other_images_of_the_batch():
    """Eval mode: batchnorm uses its running statistics, so an image's logits are its own."""
    model = make_model()
    model.eval()
    batch = images(model.config, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[1:2], model(batch[1:2]), rtol=1e-4, atol=1e-5)


def test_a_training_step_lowers_the_loss():
    step = case_by_id("cnn.train-torch-fp32-tiny-B16").build(detect("cpu"), base_seed=3)
    losses = [step().item() for _ in range(6)]
    assert losses[-1] < losses[0]


def test_cnn_cases_are_torch_only_and_count_images():
    selected = [c for c in cases("quick", detect("cpu")) if c.workload.name.startswith("cnn.")]
    assert {c.impl for c in selected} == {"torch"}
    train = case_by_id("cnn.train-torch-fp32-tiny-B16").accounting()
    assert train["unit"] == "samples" and train["units_per_call"] == 16
    assert train["flops"] == 16 * MODEL_CONFIGS["tiny"].train_flops_per_image()
    logits = case_by_id("cnn.infer-torch-fp32-tiny-B16").build(detect("cpu"), base_seed=0)()
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
