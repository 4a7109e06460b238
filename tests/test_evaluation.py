"""Evaluation: robust accuracy with early exit, curves, worst cases, transfer, diagnostics.

The checklist (``course_adv.checklist``) is tested in ``test_checklist.py``, on the models
trained here (``trained_cnn``).
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from models_for_evaluation import Scaled, Softmaxed, trained_cnn
from torch import nn

from course_adv import attacks
from course_adv.data import load_data
from course_adv.evaluation import (
    EpsCurve,
    accuracy,
    accuracy_vs_eps,
    output_kind,
    predict,
    random_sign_noise,
    robust_accuracy,
    robust_mask,
    transfer_matrix,
    worst_case_accuracy,
    zero_gradient_fraction,
)
from course_adv.models import SmallCNN

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A small CNN trained for a few seconds: honest, undefended, about 90% accurate."""
    return trained_cnn(0)


@pytest.fixture(scope="module")
def other() -> nn.Module:
    """A second honest model (another seed, other data): the transfer source."""
    return trained_cnn(1, start=1000)


@pytest.fixture(scope="module")
def test_set():
    data = load_data()
    return data.x_test[:200], data.y_test[:200]


def test_accuracy_and_predict(model, test_set):
    x, y = test_set
    model.train()
    logits = predict(model, x, batch_size=64)
    assert model.training  # mode restored
    model.eval()
    assert not model.training
    assert logits.shape == (200, 10)
    # float32 results differ with the batch size (by CPU): tolerances, never exactness
    torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)
    direct = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy(model, x, y) == pytest.approx(direct, abs=0.011)
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


def test_robust_accuracy_is_correct_under_attack_over_all_points(model, test_set):
    x, y = test_set
    identity = lambda m, xb, yb: xb  # noqa: E731
    for early_exit in (True, False):
        got = robust_accuracy(model, x, y, identity, early_exit=early_exit)
        assert got == pytest.approx(accuracy(model, x, y))
    # "attacking" with other digits breaks most points: correct / all points, not / attacked
    other_digits = lambda m, xb, yb: xb.roll(1, 0)  # noqa: E731
    assert robust_accuracy(model, x, y, other_digits, batch_size=200) < 0.3


def test_a_clean_mistake_that_the_attack_fixes_counts_as_robust():
    """COURSE.md section 2: correct under attack over all points, no 'also right clean' term.

    The old ``robust_mask`` never attacked clean mistakes and counted them as broken, so
    robust accuracy meant something else there than in the curves, widgets and grader.
    """
    x = torch.zeros(10, 1, 1, 2)  # pixel 0 = 0: Threshold predicts class 1
    y = torch.zeros(10, dtype=torch.long)  # but the label is 0: every point is a clean mistake

    def fix(m, xb, yb):
        return xb.index_fill(3, torch.tensor([0]), 1.0)  # pixel 0 = 1: class 0, correct

    assert accuracy(Threshold(), x, y) == 0.0
    assert robust_accuracy(Threshold(), x, y, fix) == 1.0
    curve = accuracy_vs_eps(Threshold(), x, y, lambda m, xb, yb, eps: fix(m, xb, yb), [0.1])
    assert curve.accuracy == [1.0]  # the same meaning in the curves


def test_restarts_and_more_attacks_never_raise_robust_accuracy(model, test_set):
    """Run 1 of three restarts is the single run (same seed), so three can only break more;
    a list of attacks breaks exactly the union of what each breaks (float64: no rounding)."""
    double = SmallCNN().double()
    double.load_state_dict(model.state_dict())
    x, y = test_set[0].double(), test_set[1]
    pgd = lambda m, xb, yb: attacks.pgd(m, xb, yb, 0.1, 0.02, 5, freeze_fooled=True)  # noqa: E731
    fgsm = lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.1)  # noqa: E731
    torch.manual_seed(0)
    one = robust_mask(double, x, y, pgd)
    torch.manual_seed(0)
    three = robust_mask(double, x, y, pgd, restarts=3)
    assert not (three & ~one).any()  # every point three restarts leave, one run leaves
    assert three.sum() < one.sum()  # and the restarts break more (the test can fail)
    torch.manual_seed(0)
    both = robust_mask(double, x, y, [pgd, fgsm])
    assert torch.equal(both, one & robust_mask(double, x, y, fgsm))


def test_evaluation_leaves_torchs_global_state_alone(model, test_set):
    """No set_flush_denormal and no seeding inside the library (notebooks set those)."""
    x, y = test_set

    def flushes() -> bool:  # a float64 subnormal survives a multiplication unless flushed
        return (torch.tensor([1e-310], dtype=torch.float64) * 1.0).item() == 0.0

    fgsm = lambda m, xb, yb: attacks.fgsm(m, xb, yb, 0.1)  # noqa: E731
    calls = {
        "robust_mask": lambda: robust_mask(model, x, y, fgsm),
        "accuracy_vs_eps": lambda: accuracy_vs_eps(model, x, y, attacks.fgsm, [0.0, 0.1]),
        "zero_gradient_fraction": lambda: zero_gradient_fraction(model, x, y),
        "predict": lambda: predict(model, x),
    }
    torch.set_flush_denormal(False)
    try:
        for name, call in calls.items():
            rng = torch.get_rng_state()
            call()
            assert not flushes(), f"{name} turned flush-denormal on"
            assert torch.equal(torch.get_rng_state(), rng), f"{name} used or reseeded the RNG"
    finally:
        torch.set_flush_denormal(False)


def test_predict_keeps_a_frozen_batchnorm_frozen():
    """One eval_mode everywhere: model.train(was_training) used to unfreeze every submodule."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    model.train()
    model[1].eval()  # frozen statistics inside a training model
    x = torch.rand(5, 1, 4, 4)
    y = torch.zeros(5, dtype=torch.long)
    predict(model, x)
    accuracy(model, x, y)
    zero_gradient_fraction(model, x, y)
    assert model.training and model[0].training and not model[1].training


def test_accuracy_vs_eps_is_tidy_and_falls(model, test_set):
    x, y = test_set
    curve = accuracy_vs_eps(model, x, y, attacks.fgsm, [0, 0.05, 0.1, 0.2])
    assert isinstance(curve, EpsCurve) and curve.label == "fgsm"
    assert curve.eps == [0.0, 0.05, 0.1, 0.2]
    assert curve.accuracy[0] == pytest.approx(accuracy(model, x, y))
    assert all(a > b for a, b in zip(curve.accuracy, curve.accuracy[1:], strict=False))
    # Goodfellow et al.: the misclassified adversarial examples are confidently wrong, and
    # more so as eps grows (a 10-class max-softmax is >= 0.1 anyway: that bound says nothing)
    assert curve.confidence[-1] > 0.6 and curve.confidence[-1] > curve.confidence[1]
    for row in curve.as_dicts():
        assert set(row) == {"label", "eps", "accuracy", "confidence", "n"} and row["n"] == 200
    assert "accuracy" in str(curve) and "<table>" in curve._repr_html_()


def test_confidence_is_mean_max_softmax_on_the_misclassified(model, test_set):
    x, y = test_set
    curve = accuracy_vs_eps(model, x, y, attacks.fgsm, [0.15])
    x_adv = attacks.fgsm(model, x, y, 0.15)
    probs = model(x_adv).softmax(1)
    wrong = probs.argmax(1) != y
    assert curve.confidence[0] == pytest.approx(probs.max(1).values[wrong].mean().item(), abs=1e-5)
    assert curve.accuracy[0] == pytest.approx(
        robust_accuracy(model, x, y, partial(attacks.fgsm, eps=0.15))
    )
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
    with pytest.raises(TypeError, match=r"\by\b.*int64"):
        robust_mask(model, x, y.int(), lambda m, a, b: a)
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)
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


# --------------------------------------------------------------------------- transfer rate


class _Reads(nn.Module):
    """Predicts the class written in one of the two pixels of a 1 x 1 x 2 input (as 10 * x)."""

    def __init__(self, pixel: int) -> None:
        super().__init__()
        self.pixel = pixel
        self.anchor = nn.Parameter(torch.zeros(()))  # so the model has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = (10 * x[:, 0, 0, self.pixel]).round().long()
        return torch.nn.functional.one_hot(label, 10).to(x.dtype) + 0 * self.anchor


def test_transfer_rate_counts_only_the_sources_successes():
    """Six points, one of each kind; pixel 0 is what the source reads, pixel 1 the target."""
    from course_adv.evaluation import transfer_rate

    y = torch.tensor([1, 1, 1, 1, 1, 1])
    # source on clean: right, right, right, right, wrong, right
    clean = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 1], [2, 1], [1, 3]]) / 10
    # source on x_adv: fooled, fooled, fooled, not fooled, -, fooled
    # target on x_adv: fooled, not fooled, fooled, fooled, fooled, fooled
    adv = torch.tensor([[2, 2], [2, 1], [3, 4], [1, 2], [2, 2], [2, 3]]) / 10
    x, x_adv = clean.view(6, 1, 1, 2).float(), adv.view(6, 1, 1, 2).float()
    source, target = _Reads(0), _Reads(1)

    def attack(m, xb, yb):
        return x_adv

    # counted: points 0, 1, 2, 5 (source right clean and fooled); the target is fooled on 0, 2, 5
    assert transfer_rate(source, target, x, y, attack) == pytest.approx(3 / 4)
    assert transfer_rate(source, source, x, y, attack) == 1.0  # white-box: every success counts
    # nothing to count: nan, not a made-up number
    assert math.isnan(transfer_rate(source, target, x, y, lambda m, xb, yb: xb))
    assert transfer_matrix([source], [target], x, y, attack).error[0][0] == pytest.approx(5 / 6)


def test_transfer_rate_between_two_cnns_is_a_share_of_the_sources_successes(model, other, test_set):
    from course_adv.evaluation import transfer_rate

    x, y = test_set
    fgsm = partial(_fgsm_attack, eps=0.15)
    rate = transfer_rate(model, other, x, y, fgsm)
    assert 0.2 < rate < 1.0
    assert transfer_rate(model, model, x, y, fgsm) == 1.0
    with pytest.raises(TypeError, match="int64"):
        transfer_rate(model, other, x, y.int(), fgsm)


def _fgsm_attack(m, xb, yb, eps):
    return attacks.fgsm(m, xb, yb, eps)
