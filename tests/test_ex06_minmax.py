"""Exercise 06's spec (one step of PGD adversarial training, eq. (3) of Madry et al. 2018):
right answers pass and the untouched stub scores zero; typical wrong ones fail with feedback
that names the mistake; the reference is the library's (``attacks.pgd`` inside, ``PGDMinMax``'s
loss) and behaves as the paper says (the inner max raises the loss, the outer min lowers it); a
submission that calls the course's PGD earns nothing. Through ``check()``, which scores as
``course-adv grade`` does, and through ``grade_path`` itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course_adv import attacks, training
from course_adv.grading import check, format_text, grade_path
from course_adv.grading.digits import fresh_copy
from course_adv.grading.registry import load_spec
from course_adv.grading.spec import Outcome

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec(ROOT / "course_adv/grading/exercises/ex06_minmax.py")


def step(
    model,
    optimizer,
    x,
    y,
    eps,
    alpha,
    steps,
    random_start,
    *,
    reduction="sum",
    draw="uniform",
    attack_mode="eval",
    update_mode="train",
    zero_grad=True,
    project=True,
    clip=True,
    sign=1.0,
    clean=False,
):
    """A hand-written min-max step; the keywords switch on the typical mistakes."""
    model.train(attack_mode == "train")
    x_adv = x.clone()
    if random_start:
        if draw == "rand":  # U(-eps, eps) from U(0, 1)
            noise = torch.rand_like(x) * 2 * eps - eps
        else:
            noise = torch.empty_like(x).uniform_(-eps, eps)
        x_adv = (x + noise).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction=reduction)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + sign * alpha * grad.sign()
        if project:
            x_adv = x + (x_adv - x).clamp(-eps, eps)
        if clip:
            x_adv = x_adv.clamp(0, 1)
    model.train(update_mode == "train")
    loss = F.cross_entropy(model(x if clean else x_adv), y)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _feedback(fn):
    result = check("minmax_step", fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_right_answers_pass_with_a_summed_or_averaged_attack_loss(reduction):
    result, text = _feedback(lambda *a: step(*a, reduction=reduction))
    assert result.passed and result.score == result.max_score > 0, text


def test_a_random_start_from_rand_like_draws_the_same_numbers():
    """U(0, 1) * 2 eps - eps rounds exactly as uniform_(-eps, eps) does: both pass."""
    result, text = _feedback(lambda *a: step(*a, draw="rand"))
    assert result.passed, text


def test_a_random_start_drawn_after_another_draw_is_told_which_draw_the_grader_makes():
    def late_draw(*args):
        torch.rand(1)  # something else random comes first: the start is not the grader's
        return step(*args)

    result, text = _feedback(late_draw)
    assert result.score < result.max_score
    assert "torch.empty_like(x).uniform_(-eps, eps)" in text, text
    assert all(r.passed for r in result.results if "start at x" in r.name), text


def test_the_reference_is_the_library_pgd_minmax_loss():
    """The reference's inner max is ``attacks.pgd`` (what notebook 06 trains with); one step of
    it equals ``PGDMinMax``'s loss on the same batch and random stream."""
    case = next(c for c in SPEC.EXERCISE.cases if c.random_start)
    inputs = case.inputs()
    x, y = inputs["x"], inputs["y"]
    objective = training.PGDMinMax(case.eps, steps=case.steps, step_size=case.alpha / case.eps)
    library_model, _ = fresh_copy(inputs, case.lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        library = objective(library_model, x, y, epoch=1.0).item()
    model, optimizer = fresh_copy(inputs, case.lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        mine = step(model, optimizer, x, y, case.eps, case.alpha, case.steps, True)
    assert mine == pytest.approx(library, rel=1e-5)
    assert SPEC.reference_step(case, inputs)["ref"]["loss"] == pytest.approx(library, rel=1e-5)


def test_untouched_stub_scores_zero_and_says_not_written():
    def stub(*args):
        raise NotImplementedError("your code here")

    result, text = _feedback(stub)
    assert result.score == 0 and "not written yet" in text, text


def _leaky(model, optimizer, x, y, eps, alpha, steps, random_start):
    optimizer.zero_grad()  # cleared first, then filled by the attack's backward() calls
    model.eval()
    x_adv = x.clone()
    if random_start:
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        F.cross_entropy(model(x_adv), y).backward()
        step_ = alpha * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv.detach() + step_, x - eps), x + eps).clamp(0, 1)
    model.train()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _fgsm(model, optimizer, x, y, eps, alpha, steps, random_start):
    return step(model, optimizer, x, y, eps, eps, 1, False)


def _flip_start(model, optimizer, x, y, eps, alpha, steps, random_start):
    return step(model, optimizer, x, y, eps, alpha, steps, not random_start)


def _extra_train_pass(model, optimizer, x, y, eps, alpha, steps, random_start):
    loss = step(model, optimizer, x, y, eps, alpha, steps, random_start)
    with torch.no_grad():
        model(x)  # an "evaluation" in train mode moves BatchNorm's running averages
    return loss


def _in_place(model, optimizer, x, y, eps, alpha, steps, random_start):
    loss = step(model, optimizer, x, y, eps, alpha, steps, random_start)
    x.zero_()
    return loss


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (lambda *a: step(*a, attack_mode="train"), "crafted with the model in train mode"),
        (lambda *a: step(*a, update_mode="eval"), "update ran with the model in eval mode"),
        (lambda *a: step(*a, update_mode="eval"), "left in eval mode"),
        (lambda *a: step(*a, zero_grad=False), "optimizer.zero_grad()"),
        (_leaky, "filled the parameters' .grad too"),
        (lambda *a: step(*a, project=False), "left the eps-ball"),
        (lambda *a: step(*a, clip=False), "clip x_adv to [0, 1]"),
        (_fgsm, "one FGSM step"),
        (lambda *a: step(*a, sign=-1.0), "descends the loss"),
        (_flip_start, "random_start=True asks PGD to start from a random point"),
        (_flip_start, "random_start=False asks PGD to start at"),
        (lambda *a: step(*a, clean=True), "loss on the clean x"),
        (_extra_train_pass, "running averages"),
        (_in_place, "changed its input x in place"),
        (lambda *a: (step(*a), None)[1], "the returned loss"),
    ],
    ids=[
        "train-mode-attack",
        "eval-mode-update",
        "left-in-eval",
        "no-zero-grad",
        "attack-grad-leak",
        "no-projection",
        "no-clip",
        "fgsm",
        "descent",
        "start-missing",
        "start-unasked",
        "clean-loss",
        "extra-train-pass",
        "in-place",
        "no-loss",
    ],
)
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_a_mistake_is_named_alone():
    """A step with one mistake gets that diagnosis, not a second one about its loss."""
    result, text = _feedback(lambda *a: step(*a, project=False))
    wrong = [r for r in result.results if not r.passed]
    assert wrong and all(len(r.feedback) == 1 for r in wrong), text


def test_a_submission_that_calls_the_course_pgd_is_flagged_and_earns_nothing(tmp_path):
    """Graded as course-adv grade does (in bubblewrap where it is installed)."""
    notebook = nbformat.read(ROOT / "solutions" / "06_minmax_training.ipynb", as_version=4)
    borrowed = (
        "def minmax_step(model, optimizer, x, y, eps, alpha, steps, random_start):\n"
        "    x_adv = attacks.pgd(model, x, y, eps, alpha, steps, random_start=random_start)\n"
        "    model.train()\n"
        "    loss = F.cross_entropy(model(x_adv), y)\n"
        "    optimizer.zero_grad()\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    return loss.item()"
    )
    cell = next(c for c in notebook.cells if "def minmax_step" in c.source)
    cell.source = borrowed
    nbformat.write(notebook, tmp_path / "borrowed_06_minmax_training.ipynb")
    sandbox = shutil.which("bwrap") is not None
    (report,) = grade_path(
        tmp_path / "borrowed_06_minmax_training.ipynb", hidden=[], sandbox=sandbox
    )
    assert report.score == 0 and report.flags, format_text([report])
    assert any("course_adv.attacks.pgd" in flag for flag in report.flags), report.flags


def test_scoring_a_result_that_cannot_be_read():
    case = SPEC.EXERCISE.cases[0]
    ref = SPEC.reference_step(case, case.inputs())
    problems = SPEC.score_step(case, ref, Outcome(arrays={"state": None}))
    assert "could not be read back" in problems[0]


def test_the_inner_max_raises_the_loss_and_the_outer_min_lowers_it():
    """Eq. (3) as Madry et al. describe it: PGD finds points of the eps-ball with a higher loss
    than x, and repeated steps on them lower that worst-case loss."""
    for case in SPEC.EXERCISE.cases:
        inputs = case.inputs()
        model, optimizer = fresh_copy(inputs, case.lr)
        x, y = inputs["x"], inputs["y"]
        x_adv = attacks.pgd(model, x, y, case.eps, case.alpha, case.steps, freeze_fooled=False)
        model.eval()
        with torch.no_grad():
            assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
        assert (x_adv - x).abs().max() <= case.eps + 1e-6 and 0 <= x_adv.min() <= x_adv.max() <= 1
        model.train()
        torch.manual_seed(case.seed)
        args = (x, y, case.eps, case.alpha, case.steps, case.random_start)
        losses = [step(model, optimizer, *args) for _ in range(15)]
        assert losses[-1] < losses[0], (case.describe(), losses)


def test_check_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("minmax_step", step)
    assert torch.equal(torch.rand(3), expected)
