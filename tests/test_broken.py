"""The broken defences of notebook 08: their gradients really vanish, their decisions are the
wrapped model's (or the quantized input's), a naive attack fails and the adaptive one wins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models_for_evaluation import trained_cnn

from course_adv import attacks, evaluation
from course_adv.broken import Quantized, ScaledLogits, quantize, straight_through_quantize
from course_adv.checklist import CHECKS, robustness_checklist
from course_adv.data import load_data

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cpu_only")

EPS = 0.3


@pytest.fixture(scope="module")
def model():
    return trained_cnn(0)


@pytest.fixture(scope="module")
def test_set():
    data = load_data()
    return data.x_test[:200], data.y_test[:200]


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


def _pgd(eps=EPS, steps=20, loss="ce", on=None):
    """PGD-``steps`` crafted on ``on`` (default: the model under test), for robust_accuracy."""
    return lambda m, x, y: attacks.pgd(
        on or m, x, y, eps, 2.5 * eps / steps, steps, loss=loss, freeze_fooled=True
    )


# --------------------------------------------------------------------------- scaled logits


def test_scaled_logits_keep_every_decision_and_scale_the_logits(model, test_set):
    x, _ = test_set
    scaled = ScaledLogits(model, 1000.0)
    with torch.no_grad():
        plain, big = model(x), scaled(x)
    assert torch.equal(big.argmax(1), plain.argmax(1))
    assert torch.allclose(big, 1000.0 * plain, rtol=1e-6, atol=0)
    assert next(scaled.parameters()) is next(model.parameters())  # shared, not copied
    assert "scale=1000" in repr(scaled)


def test_scaled_logits_gradient_underflows_to_exactly_zero(model, test_set):
    """In float32 the saturated softmax leaves an all-zero input gradient at every point the
    model classifies with a clear margin; the wrapped model has none."""
    x, y = test_set
    scaled = ScaledLogits(model, 1000.0)
    grad = _input_grad(scaled, x, y).flatten(1)
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).values
    confident = (logits.argmax(1) == y) & (top2[:, 0] - top2[:, 1] > 0.2)
    assert confident.float().mean() > 0.7
    assert (grad[confident] == 0).all()
    assert evaluation.zero_gradient_fraction(scaled, x, y) >= confident.float().mean().item()
    assert evaluation.zero_gradient_fraction(model, x, y) == 0.0


def test_scaled_logits_fool_the_cross_entropy_not_the_margin(model, test_set):
    x, y = test_set
    scaled = ScaledLogits(model, 1000.0)
    torch.manual_seed(0)
    naive = evaluation.robust_accuracy(scaled, x, y, _pgd())
    adaptive = evaluation.robust_accuracy(scaled, x, y, _pgd(loss="cw"))
    plain = evaluation.robust_accuracy(model, x, y, _pgd())
    assert naive > 0.6 > 0.1 > adaptive
    assert plain < 0.1  # the same model, unwrapped, falls to the same attack


# --------------------------------------------------------------------------- quantization


def test_quantize_rounds_to_the_grid_and_is_idempotent():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28, dtype=torch.float64)
    for levels in (2, 4, 8, 256):
        q = quantize(x, levels)
        grid = q * (levels - 1)
        assert torch.equal(grid, grid.round()) and q.min() >= 0 and q.max() <= 1
        assert (q - x).abs().max() <= 0.5 / (levels - 1) + 1e-12
        assert torch.equal(quantize(q, levels), q)
    assert torch.equal(quantize(torch.tensor([0.2, 0.5, 0.8]), 2), torch.tensor([0.0, 0.0, 1.0]))


def test_quantized_gradient_is_zero_everywhere(model, test_set):
    x, y = test_set
    quantized = Quantized(model, 8)
    with torch.no_grad():
        assert torch.equal(quantized(x), model(quantize(x, 8)))
    assert (_input_grad(quantized, x, y) == 0).all()
    assert evaluation.zero_gradient_fraction(quantized, x, y) == 1.0


def test_bpda_forward_is_the_quantized_forward_and_backward_the_identity(model, test_set):
    """In float64: the straight-through model's outputs are exactly the quantized model's, and
    its input gradient is the wrapped model's gradient at the quantized input."""
    x, y = test_set[0][:32].double(), test_set[1][:32]
    net = trained_cnn(0, n=200, epochs=1).double()
    quantized = Quantized(net, 8)
    bpda = quantized.bpda()
    assert bpda.straight_through and bpda.model is net and bpda.levels == 8
    with torch.no_grad():
        assert torch.equal(bpda(x), quantized(x))
    q = quantize(x, 8)
    assert torch.allclose(_input_grad(bpda, x, y), _input_grad(net, q, y), rtol=0, atol=1e-12)
    v = torch.rand_like(x).requires_grad_(True)
    out = straight_through_quantize(v, 4)
    (back,) = torch.autograd.grad(out, v, torch.full_like(v, 3.0))
    assert torch.equal(out.detach(), quantize(v.detach(), 4)) and torch.equal(
        back, torch.full_like(v, 3.0)
    )


def test_quantized_fools_pgd_and_falls_to_bpda(model, test_set):
    x, y = test_set
    quantized = Quantized(model, 8)
    torch.manual_seed(0)
    naive = evaluation.robust_accuracy(quantized, x, y, _pgd())
    adaptive = evaluation.robust_accuracy(quantized, x, y, _pgd(on=quantized.bpda()))
    fgsm = evaluation.robust_accuracy(quantized, x, y, lambda m, a, b: attacks.fgsm(m, a, b, EPS))
    assert fgsm == evaluation.accuracy(quantized, x, y)  # sign(0) = 0: FGSM does nothing
    assert naive > 0.6 > 0.1 > adaptive


def test_the_checklist_flags_both(model, test_set):
    x, y = test_set[0][:100], test_set[1][:100]
    other = trained_cnn(1, start=1000)
    flagged = {}
    for name, broken in (("scaled", ScaledLogits(model)), ("quantized", Quantized(model))):
        torch.manual_seed(0)
        report = robustness_checklist(broken, x, y, EPS, source=other, steps=10, restarts=2)
        flagged[name] = set(report.flagged)
    zero, transfer = CHECKS["zero_gradients"], CHECKS["whitebox_vs_transfer"]
    assert {zero, transfer, CHECKS["second_loss"]} <= flagged["scaled"]
    assert {zero, transfer, CHECKS["noise"]} <= flagged["quantized"]


# --------------------------------------------------------------------------- arguments


def test_bad_arguments_are_rejected(model):
    with pytest.raises(TypeError, match="model"):
        ScaledLogits("cnn")
    with pytest.raises(ValueError, match="scale"):
        ScaledLogits(model, 0.0)
    with pytest.raises(ValueError, match="scale"):
        ScaledLogits(model, float("inf"))
    with pytest.raises(ValueError, match="levels"):
        Quantized(model, 1)
    with pytest.raises(ValueError, match="levels"):
        Quantized(model, 2.5)
    with pytest.raises(TypeError, match="straight_through"):
        Quantized(model, 4, straight_through=1)
    with pytest.raises(ValueError, match="levels"):
        quantize(torch.zeros(2), True)
