"""Models the evaluation and checklist tests share: honest small CNNs and masked versions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_adv.data import load_data
from course_adv.models import SmallCNN


def trained_cnn(seed: int, start: int = 0, n: int = 1000, epochs: int = 3) -> nn.Module:
    """A small CNN trained for a few seconds on ``n`` digits from ``start``: about 90% accurate.

    A plain Adam loop (not ``course_adv.training``), so these tests depend on evaluation only.
    """
    data = load_data()
    x, y = data.x_train[start : start + n], data.y_train[start : start + n]
    torch.manual_seed(seed)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(100):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


class Scaled(nn.Module):
    """Logits multiplied by a constant: same predictions, saturated softmax (masked gradients)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module, log: bool = False) -> None:
        super().__init__()
        self.model, self.log = model, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.log_softmax(1) if self.log else out.softmax(1)
