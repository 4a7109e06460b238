"""The small models of the course. All take N x 1 x 28 x 28 pixels in [0, 1] and return logits.

- ``SoftmaxRegression``: the linear model of notebook 01 (Goodfellow et al. 2015, section 4).
- ``MLP``: one or two hidden ReLU layers.
- ``SmallCNN``: the MNIST network of Wong, Rice & Kolter 2020 ("Fast is better than free"):
  two strided 4x4 convolutions, then two linear layers, 166,406 parameters at width 1.
- ``PoolCNN``: a second, differently built CNN (3x3 convolutions with max-pooling) for
  transfer and ensemble experiments, where the source and target should differ.

``width`` multiplies the channel/hidden sizes (the capacity effect of notebook 03) and
``dropout`` adds dropout before the last layer (the lecture's dropout comparison).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "SoftmaxRegression",
    "MLP",
    "SmallCNN",
    "PoolCNN",
    "build_model",
    "MODELS",
    "count_parameters",
]


def _check(width: int | float, dropout: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: logits = W x + b on the flattened image."""

    def __init__(self, num_classes: int = 10, input_dim: int = 28 * 28) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network with ``depth`` hidden layers of ``hidden * width`` units."""

    def __init__(
        self,
        hidden: int = 256,
        depth: int = 2,
        width: float = 1,
        dropout: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        _check(width, dropout)
        size = max(1, int(hidden * width))
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = 28 * 28
        for _ in range(depth):
            layers += [nn.Linear(fan_in, size), nn.ReLU()]
            fan_in = size
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Wong et al. 2020's MNIST net: conv(16,4,s2) - conv(32,4,s2) - fc(100) - fc(10)."""

    def __init__(self, width: float = 1, dropout: float = 0.0, num_classes: int = 10) -> None:
        super().__init__()
        _check(width, dropout)
        c1, c2, h = max(1, int(16 * width)), max(1, int(32 * width)), max(1, int(100 * width))
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, h),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(h, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PoolCNN(nn.Module):
    """A LeNet-style CNN: conv(32,3) - maxpool - conv(64,3) - maxpool - fc(128) - fc(10)."""

    def __init__(self, width: float = 1, dropout: float = 0.0, num_classes: int = 10) -> None:
        super().__init__()
        _check(width, dropout)
        c1, c2, h = max(1, int(32 * width)), max(1, int(64 * width)), max(1, int(128 * width))
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, h),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(h, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "softmax": SoftmaxRegression,
    "mlp": MLP,
    "cnn": SmallCNN,
    "pool_cnn": PoolCNN,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name (``softmax``, ``mlp``, ``cnn``, ``pool_cnn``) with its keyword options."""
    if name not in MODELS:
        raise ValueError(f"model name {name!r} is unknown; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
