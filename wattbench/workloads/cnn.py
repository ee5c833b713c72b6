"""Image workloads: a ResNet-style CNN trained and served (torch path; the CNN has no Triton kernels).

- `cnn.train`: forward, cross-entropy, backward and an SGD-with-momentum step; work = images.
- `cnn.infer`: forward only (batchnorm with its running statistics), over a batch sweep; work = images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wattbench.models.cnn import MODEL_CONFIGS, ResNet
from wattbench.workloads import (MODEL_STEP, Inputs, Params, Step, Workload, activation_dtype, device_sizes,
                                 element_size, register)

PRECISIONS = {"cpu": ("fp32",), "cuda": ("bf16",)}
SGD = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-5}


def _inputs(params: Params, precision: str, device: torch.device, generator: torch.Generator) -> Inputs:
    config = MODEL_CONFIGS[params["model"]]
    dtype = activation_dtype(precision)
    # Channels-last is the layout cuDNN's fast convolutions use; on a CPU the default layout is kept.
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = ResNet(config, dtype, device, generator).to(memory_format=layout)
    shape = (params["B"], config.in_channels, config.image_size, config.image_size)
    images = torch.randn(shape, generator=generator, device=device).to(dtype).contiguous(memory_format=layout)
    labels = torch.randint(0, config.classes, (params["B"],), generator=generator, device=device)
    return {"model": model, "images": images, "labels": labels}


def _train(inputs: Inputs) -> Step:
    model, images, labels = inputs["model"], inputs["images"], inputs["labels"]
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), **SGD)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _infer(inputs: Inputs) -> Step:
    model, images = inputs["model"], inputs["images"]
    model.eval()

    def step():
        with torch.no_grad():
            return model(images)

    return step


def _image_bytes(p: Params, precision: str) -> int:
    config = MODEL_CONFIGS[p["model"]]
    return p["B"] * config.in_channels * config.image_size ** 2 * element_size(precision)


def _infer_bytes(p: Params, precision: str) -> int:
    """Weights, images and logits (activations excluded)."""
    config = MODEL_CONFIGS[p["model"]]
    logits = p["B"] * config.classes * element_size(precision)
    return config.parameter_count() * element_size(precision) + _image_bytes(p, precision) + logits


def _train_bytes(p: Params, precision: str) -> int:
    """Weights read in forward and backward, gradients written, then SGD's read of weight, gradient and
    momentum and write of weight and momentum: 8 passes over the weights; plus the images."""
    return 8 * MODEL_CONFIGS[p["model"]].parameter_count() * element_size(precision) + _image_bytes(p, precision)


register(Workload(
    name="cnn.train", op="resnet", style="train", unit="samples", suite="models",
    sizes=device_sizes(cpu=[{"model": "tiny", "B": 16}], cuda=[{"model": "resnet18", "B": 64}]),
    precisions=PRECISIONS, make_inputs=_inputs, impls={"torch": _train},
    units_per_call=lambda p: p["B"],
    flops=lambda p: p["B"] * MODEL_CONFIGS[p["model"]].train_flops_per_image(), bytes=_train_bytes,
    not_capturable=MODEL_STEP,
))

register(Workload(
    name="cnn.infer", op="resnet", style="infer", unit="samples", suite="models",
    sizes=device_sizes(cpu=[{"model": "tiny", "B": b} for b in (1, 16)],
                 cuda=[{"model": "resnet18", "B": b} for b in (1, 4, 16, 64)]),
    precisions=PRECISIONS, make_inputs=_inputs, impls={"torch": _infer},
    units_per_call=lambda p: p["B"],
    flops=lambda p: p["B"] * MODEL_CONFIGS[p["model"]].forward_flops_per_image(), bytes=_infer_bytes,
    not_capturable=MODEL_STEP,
))
