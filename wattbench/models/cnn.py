"""A small ResNet-style CNN, so that image workloads are measured too (torch path only).

A stem convolution, stages of residual blocks (conv 3x3 + batchnorm + ReLU, twice, with a
shortcut), global average pooling and a linear head. Every stage after the first halves the
resolution and uses the next width. Weights are random, drawn from the caller's generator, so
a benchmark's inputs are reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    widths: tuple[int, ...]
    blocks_per_stage: int
    image_size: int
    classes: int
    stem_kernel: int = 3
    stem_stride: int = 1
    stem_pool: bool = False
    in_channels: int = 3

    def __post_init__(self):
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive channel counts, got {self.widths!r}")
        for name in ("blocks_per_stage", "image_size", "classes", "stem_kernel", "stem_stride", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    def _convolutions(self) -> list[tuple[int, int, int, int]]:
        """(in channels, out channels, kernel, output side) of every convolution, in order."""
        side = (self.image_size + 2 * (self.stem_kernel // 2) - self.stem_kernel) // self.stem_stride + 1
        convs = [(self.in_channels, self.widths[0], self.stem_kernel, side)]
        if self.stem_pool:
            side = (side - 1) // 2 + 1
        channels = self.widths[0]
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                if stage > 0 and block == 0:
                    side = (side - 1) // 2 + 1
                    convs.append((channels, width, 1, side))  # projection shortcut
                convs += [(channels, width, 3, side), (width, width, 3, side)]
                channels = width
        return convs

    def parameter_count(self) -> int:
        """Convolution weights, batchnorm scales and shifts (one per convolution) and the linear head."""
        convs = sum(c_in * c_out * k * k + 2 * c_out for c_in, c_out, k, _ in self._convolutions())
        return convs + self.widths[-1] * self.classes + self.classes

    def forward_flops_per_image(self) -> int:
        """2 x multiply-adds of the convolutions and the head; batchnorm, ReLU, adds and pooling are
        not counted (as in torch.utils.flop_counter)."""
        convs = sum(2 * c_in * c_out * k * k * side * side for c_in, c_out, k, side in self._convolutions())
        return convs + 2 * self.widths[-1] * self.classes

    def train_flops_per_image(self) -> int:
        """Forward, then backward (gradients of inputs and of weights: twice the forward), except the
        gradient of the images, which nothing needs."""
        c_in, c_out, k, side = self._convolutions()[0]
        return 3 * self.forward_flops_per_image() - 2 * c_in * c_out * k * k * side * side


MODEL_CONFIGS = {
    # 32x32 images (CIFAR-sized): a training step on a 2-core CPU takes tens of milliseconds.
    "tiny": CNNConfig(widths=(16, 32, 64), blocks_per_stage=1, image_size=32, classes=10),
    # ResNet-18 (11.7M parameters) on 224x224 ImageNet-sized images, for GPUs.
    "resnet18": CNNConfig(widths=(64, 128, 256, 512), blocks_per_stage=2, image_size=224, classes=1000,
                          stem_kernel=7, stem_stride=2, stem_pool=True),
}


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, device: torch.device) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False, device=device),
                         nn.BatchNorm2d(c_out, device=device))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, device: torch.device):
        super().__init__()
        self.first = _conv_bn(c_in, c_out, 3, stride, device)
        self.second = _conv_bn(c_out, c_out, 3, 1, device)
        needs_projection = stride != 1 or c_in != c_out
        self.shortcut = _conv_bn(c_in, c_out, 1, stride, device) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(torch.relu(self.first(x)))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: CNNConfig, dtype: torch.dtype, device: torch.device, generator: torch.Generator):
        super().__init__()
        self.config = c = config
        stem = [*_conv_bn(c.in_channels, c.widths[0], c.stem_kernel, c.stem_stride, device), nn.ReLU()]
        if c.stem_pool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        blocks, channels = [], c.widths[0]
        for stage, width in enumerate(c.widths):
            for block in range(c.blocks_per_stage):
                blocks.append(ResidualBlock(channels, width, 2 if stage > 0 and block == 0 else 1, device))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, c.classes, device=device)
        self._initialize(generator)
        self.to(dtype)

    def _initialize(self, generator: torch.Generator) -> None:
        """He initialisation for convolutions, small normal for the head, from the caller's generator."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.normal_(self.head.weight, std=0.01, generator=generator)
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, channels, side, side) → logits (B, classes)."""
        features = self.blocks(self.stem(images))
        return self.head(features.mean(dim=(2, 3)))
