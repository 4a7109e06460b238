"""Evaluation: robust accuracy with early exit, curves, worst cases, transfer, the checklist."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from course_adv import attacks
from course_adv.data import load_data
from course_adv.evaluation import (
    EpsCurve,
    Report,
    accuracy,
    accuracy_vs_eps,
    output_kind,
    predict,
    random_sign_noise,
    robust_accuracy,
    robust_mask,
    robustness_checklist,
    transfer_matrix,
    worst_case_accuracy,
    zero_gradient_fraction,
)
from course_adv.models import SmallCNN
from course_adv.training import Standard, train


def _trained(seed: int, n: int = 1000, epochs: int = 3) -> nn.Module:
    data = load_data()
    torch.manual_seed(seed)
    model = SmallCNN()
    train(
        model,
        data.x_train[:n],
        data.y_train[:n],
        Standard(),
        epochs=epochs,
        lr=3e-3,
        batch_size=100,
        seed=seed,
        device="cpu",
        progress=False,
    )
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A small CNN trained for a few seconds: honest, undefended, about 90% accurate."""
    return _trained(0)


@pytest.fixture(scope="module")
def other() -> nn.Module:
    """A second honest model (another seed, other data): the transfer source."""
    data = load_data()
    torch.manual_seed(1)
    m = SmallCNN()
    train(
        m,
        data.x_train[1000:2000],
        data.y_train[1000:2000],
        Standard(),
        epochs=3,
        lr=3e-3,
        batch_size=100,
        seed=1,
        device="cpu",
        progress=False,
    )
    return m.eval()


@pytest.fixture(scope="module")
def test_set():
    data = load_data()
    return data.x_test[:200], data.y_test[:200]


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


def test_accuracy_and_predict(model, test_set):
    x, y = test_set
    model.train()
    logits = predict(model, x, batch_size=64)
    assert model.training  # mode restored
    model.eval()
    assert logits.shape == (200, 10)
    assert accuracy(model, x, y) == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    assert accuracy(model, x, y) > 0.8


def test_early_exit_equals_attacking_every_point(model, test_set):
    x, y = test_set
    double = SmallCNN().double()
    double.load_state_dict(model.state_dict())  # float64: batch composition cannot flip a sign
    x = x.double()
    calls = {True: 0, False: 0}

    def counted(flag, attack):
        def run(m, xb, yb):
            calls[flag] += len(xb)
            return attack(m, xb, yb)

        return run

    deterministic = [
        lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.1),
        lambda m, xb, yb: attacks.bim(m, xb, yb, 0.1, alpha=0.02, steps=5),
        lambda m, xb, yb: attacks.pgd(m, xb, yb, 0.1, 0.01, 10, random_start=False, loss="cw"),
    ]
    for flag in (True, False):
        runs = [counted(flag, a) for a in deterministic]
        mask = robust_mask(double, x, y, runs, restarts=2, early_exit=flag, batch_size=64)
        if flag:
            fast = mask
        else:
            slow = mask
    assert torch.equal(fast, slow)
    assert 0 < fast.float().mean() < accuracy(double, x, y)  # the attacks did break points
    assert calls[False] == 6 * len(x)  # every point, every run
    assert calls[True] < calls[False] / 2  # broken points were not attacked again


def test_robust_accuracy_counts_clean_mistakes_as_broken(model, test_set):
    x, y = test_set
    identity = lambda m, xb, yb: xb  # noqa: E731
    for early_exit in (True, False):
        got = robust_accuracy(model, x, y, identity, early_exit=early_exit)
        assert got == pytest.approx(accuracy(model, x, y))
    # "attacking" with other digits breaks most points: correct / all points, not / attacked
    other_digits = lambda m, xb, yb: xb.roll(1, 0)  # noqa: E731
    assert robust_accuracy(model, x, y, other_digits, batch_size=200) < 0.3


def test_restarts_and_more_attacks_never_raise_robust_accuracy(model, test_set):
    x, y = test_set
    torch.manual_seed(0)
    pgd = lambda m, xb, yb: attacks.pgd(m, xb, yb, 0.1, 0.02, 5)  # noqa: E731
    fgsm = lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.1)  # noqa: E731
    one = robust_mask(model, x, y, pgd)
    three = robust_mask(model, x, y, pgd, restarts=3)
    both = robust_mask(model, x, y, [pgd, fgsm])
    assert three.float().mean() <= one.float().mean() + 0.02
    assert both.float().mean() <= robust_mask(model, x, y, fgsm).float().mean()


def test_accuracy_vs_eps_is_tidy_and_falls(model, test_set):
    x, y = test_set
    curve = accuracy_vs_eps(model, x, y, attacks.fgsm, [0, 0.05, 0.1, 0.2])
    assert isinstance(curve, EpsCurve) and curve.label == "fgsm"
    assert curve.eps == [0.0, 0.05, 0.1, 0.2]
    assert curve.accuracy[0] == pytest.approx(accuracy(model, x, y))
    assert all(a > b for a, b in zip(curve.accuracy, curve.accuracy[1:], strict=False))
    assert all(0.1 <= c <= 1 for c in curve.confidence)  # max-softmax of the wrong ones
    for row in curve.as_dicts():
        assert set(row) == {"label", "eps", "accuracy", "confidence", "n"} and row["n"] == 200
    assert "accuracy" in str(curve) and "<table>" in curve._repr_html_()
    from course_adv.plotting import curves_from_results

    (drawn,) = curves_from_results(curve)
    assert list(drawn["eps"]) == curve.eps


def test_confidence_is_mean_max_softmax_on_the_misclassified(model, test_set):
    x, y = test_set
    curve = accuracy_vs_eps(model, x, y, attacks.fgsm, [0.15])
    x_adv = attacks.fgsm(model, x, y, 0.15)
    probs = model(x_adv).softmax(1)
    wrong = probs.argmax(1) != y
    assert curve.confidence[0] == pytest.approx(probs.max(1).values[wrong].mean().item(), abs=1e-5)
    perfect = accuracy_vs_eps(model, x[:1], model(x[:1]).argmax(1), attacks.fgsm, [0.0])
    assert math.isnan(perfect.confidence[0])  # nothing misclassified


class Threshold(nn.Module):
    """Two classes from pixel 0; pixel 1 is a point id in [0, 1] that the model ignores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.flatten(1)[:, :1]
        return torch.cat([(p - 0.5) * 10, (0.5 - p) * 10], dim=1)


def test_worst_case_is_per_point_not_the_min_of_means():
    x = torch.zeros(100, 1, 1, 2)
    x[:, 0, 0, 0] = 1.0  # every point is class 0
    x[:, 0, 0, 1] = torch.linspace(0, 1, 100)
    y = torch.zeros(100, dtype=torch.long)

    def breaks(low: bool):
        def attack(m, xb, yb):
            out = xb.clone()
            hit = (xb[:, 0, 0, 1] < 0.5) if low else (xb[:, 0, 0, 1] >= 0.5)
            out[hit, 0, 0, 0] = 0.0
            return out

        return attack

    result = worst_case_accuracy(Threshold(), x, y, {"A": breaks(True), "B": breaks(False)})
    assert result["clean"] == 1.0
    assert result["A"] == pytest.approx(0.5) and result["B"] == pytest.approx(0.5)
    assert result["worst case"] == 0.0  # min over attacks per point, then the mean


def test_transfer_matrix(model, other, test_set):
    x, y = test_set
    fgsm = lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.2)  # noqa: E731
    tm = transfer_matrix({"a": model, "b": other}, {"a": model, "b": other}, x, y, fgsm)
    assert tm.sources == ["a", "b"] and tm.targets == ["a", "b"]
    white_box = 1 - accuracy(model, fgsm(model, x, y), y)
    assert tm.error[0][0] == pytest.approx(white_box)
    assert tm.error[0][0] > tm.error[1][0]  # white-box beats transfer on an honest model
    assert len(tm.as_dicts()) == 4 and "source" in str(tm) and "<table>" in tm._repr_html_()


def test_diagnostics_see_masked_gradients(model, test_set):
    x, y = test_set
    assert zero_gradient_fraction(model, x, y) < 0.05
    assert zero_gradient_fraction(Scaled(model, 1000.0), x, y) > 0.5
    assert output_kind(model, x) == "logits"
    assert output_kind(Softmaxed(model), x) == "probabilities"
    assert output_kind(Softmaxed(model, log=True), x) == "log-probabilities"
    noisy = random_sign_noise(model, x, y, 0.2)
    assert noisy.min() >= 0 and noisy.max() <= 1 and (noisy - x).abs().max() <= 0.2 + 1e-6


CHECKLIST = {"eps": 0.3, "steps": 10, "restarts": 2, "n": 200}


def test_checklist_passes_an_honest_model(model, other, test_set):
    x, y = test_set
    report = robustness_checklist(model, x, y, source=other, **CHECKLIST)
    assert isinstance(report, Report)
    assert report.passed, str(report)
    assert len(report.checks) == 9 and all(c.passed for c in report.checks)
    assert report.robust_accuracy <= report.accuracy["FGSM"]
    text = str(report)
    assert "passes" in text and "zero input gradient" in text
    assert "<table>" in report._repr_html_()
    assert json.loads(json.dumps(report.as_dict()))["passed"] is True


def test_checklist_flags_a_gradient_masking_model(model, other, test_set):
    x, y = test_set
    masked = Scaled(model, 1000.0)  # same decisions, saturated softmax
    report = robustness_checklist(masked, x, y, source=other, **CHECKLIST)
    assert not report.passed
    assert report["few zero input gradients"].passed is False
    assert report["random noise no stronger than gradient attacks"].passed is False
    assert report["white-box no weaker than transfer"].passed is False
    assert "FLAG" in str(report)


def test_checklist_flags_probabilities_and_skips_the_rest(model, test_set):
    x, y = test_set
    report = robustness_checklist(Softmaxed(model), x, y, **CHECKLIST)
    assert report["model returns logits"].passed is False
    assert all(c.passed is None for c in report.checks[1:])
    assert report.flagged == ["model returns logits"]


def test_bad_arguments_are_rejected(model, test_set):
    x, y = test_set
    with pytest.raises(TypeError, match="y"):
        accuracy(model, x, y.float())
    with pytest.raises(ValueError, match="restarts"):
        robust_accuracy(model, x, y, lambda m, a, b: a, restarts=0)
    with pytest.raises(TypeError, match="attack"):
        robust_accuracy(model, x, y, "pgd")
    with pytest.raises(ValueError, match="eps_grid"):
        accuracy_vs_eps(model, x, y, attacks.fgsm, [0.1, 2.0])
    with pytest.raises(ValueError, match="eps"):
        robustness_checklist(model, x, y, 0.0)
    with pytest.raises(TypeError, match="dict"):
        worst_case_accuracy(model, x, y, [lambda m, a, b: a])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluation_moves_batches_to_the_models_device(model, test_set):
    x, y = test_set  # on the CPU
    gpu = SmallCNN().cuda()
    gpu.load_state_dict(model.state_dict())
    fgsm = lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.1)  # noqa: E731
    assert accuracy(gpu, x, y) == pytest.approx(accuracy(model, x, y), abs=0.01)
    assert robust_accuracy(gpu, x, y, fgsm) == pytest.approx(
        robust_accuracy(model, x, y, fgsm), abs=0.02
    )
