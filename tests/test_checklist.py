"""The checklist of Carlini et al. 2019 as checks: each one alone, and all of them in turn."""

from __future__ import annotations

import json

import pytest
import torch
from models_for_evaluation import Scaled, Softmaxed, trained_cnn

from course_adv import checklist
from course_adv.checklist import (
    CHECKS,
    Check,
    ChecklistReport,
    Tolerances,
    check_more_restarts,
    check_more_steps,
    check_second_loss,
    check_zero_gradients,
    robustness_checklist,
)
from course_adv.data import load_data

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")

SETTINGS = {"steps": 10, "restarts": 2}
EPS = 0.3


@pytest.fixture(scope="module")
def model():
    return trained_cnn(0)


@pytest.fixture(scope="module")
def other():
    return trained_cnn(1, start=1000)


@pytest.fixture(scope="module")
def test_set():
    data = load_data()
    return data.x_test[:200], data.y_test[:200]


@pytest.fixture(scope="module")
def honest(model, other, test_set):
    torch.manual_seed(0)
    return robustness_checklist(model, *test_set, EPS, source=other, **SETTINGS)


def test_the_checklist_runs_every_check_in_order_and_passes_an_honest_model(honest):
    report = honest
    assert isinstance(report, ChecklistReport)
    assert [c.name for c in report.checks] == list(CHECKS.values())  # names in one place
    assert report.passed, str(report)
    assert all(c.passed for c in report.checks)
    text = str(report)
    assert "passes" in text and "zero input gradient" in text
    assert "<table>" in report._repr_html_()
    assert json.loads(json.dumps(report.as_dict()))["passed"] is True


def test_robust_accuracy_is_the_per_point_worst_case(honest):
    """The mean over points of the min over attacks: below every single attack's accuracy."""
    attacked = {k: v for k, v in honest.accuracy.items() if k != "clean"}
    assert {"FGSM", "PGD-10", "PGD-10 CW", "PGD-20", "transfer FGSM"} <= set(attacked)
    assert honest.robust_accuracy <= min(attacked.values())
    assert honest.robust_accuracy < honest.accuracy["clean"]


def test_each_check_runs_alone_and_shares_a_cache(model, test_set):
    x, y = test_set
    torch.manual_seed(0)
    cache = {}
    steps = check_more_steps(model, x, y, EPS, steps=10, cache=cache)
    assert isinstance(steps, Check) and steps.name == CHECKS["more_steps"]
    assert set(cache) == {("PGD-10", EPS), ("PGD-20", EPS)}
    calls = []
    real = checklist.robust_mask

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    checklist.robust_mask = counting
    try:  # PGD-10 comes from the cache; only the CW run is new
        loss = check_second_loss(model, x, y, EPS, steps=10, cache=cache)
    finally:
        checklist.robust_mask = real
    assert len(calls) == 1 and loss.name == CHECKS["second_loss"]
    assert loss.values["base"] == pytest.approx(cache[("PGD-10", EPS)].float().mean().item())
    assert loss.values["more"] <= loss.values["base"]  # CE and CW per point: never more


def test_the_checklist_does_not_seed_the_random_stream(model, test_set):
    """Issue 8: no seeding inside (the old checklist called seed_everything(0))."""
    x, y = test_set
    torch.manual_seed(123)
    check_more_restarts(model, x[:50], y[:50], EPS, steps=2, restarts=2)
    robustness_checklist(model, x[:50], y[:50], EPS, steps=2, restarts=2)
    assert torch.initial_seed() == 123


def test_the_checklist_flags_a_gradient_masking_model(model, other, test_set):
    x, y = test_set
    masked = Scaled(model, 1000.0)  # same decisions, saturated softmax
    torch.manual_seed(0)
    report = robustness_checklist(masked, x, y, EPS, source=other, **SETTINGS)
    assert not report.passed
    # the saturated softmax hides the cross-entropy's gradient; the CW margin still has one
    flagged = {"second_loss", "whitebox_vs_transfer", "noise", "zero_gradients"}
    assert report.flagged == [name for key, name in CHECKS.items() if key in flagged]
    assert report.accuracy["PGD-10"] > 0.5 > report.accuracy["PGD-10 CW"]
    assert "FLAG" in str(report)
    assert check_zero_gradients(model, x, y).passed is True  # the honest model is not flagged


def test_the_checklist_flags_probabilities_and_skips_the_rest(model, test_set):
    report = robustness_checklist(Softmaxed(model), *test_set, EPS, **SETTINGS)
    assert report[CHECKS["logits"]].passed is False
    assert all(c.passed is None for c in report.checks[1:])
    assert report.flagged == [CHECKS["logits"]]
    assert report.robust_accuracy == report.accuracy["clean"]


def test_bad_arguments_are_rejected(model, test_set):
    x, y = test_set
    with pytest.raises(ValueError, match="eps"):
        robustness_checklist(model, x, y, 0.0)
    with pytest.raises(ValueError, match="restarts"):
        robustness_checklist(model, x, y, EPS, restarts=1)
    with pytest.raises(ValueError, match="high_eps"):
        robustness_checklist(model, x, y, EPS, high_eps=0.2)
    with pytest.raises(TypeError, match="tolerances"):
        robustness_checklist(model, x, y, EPS, tolerances={"order": 0.01})
    with pytest.raises(TypeError, match="y"):
        robustness_checklist(model, x, y.float(), EPS)
    assert Tolerances().order == 0.01
