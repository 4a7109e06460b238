"""Exercise 07's spec (one batch of ensemble adversarial training): right answers pass, typical
wrong ones fail with feedback that names the mistake, and the reference behaves as Tramer et
al. 2018 describe. Through ``check()``, as ``course-adv grade`` scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_adv import attacks
from course_adv.grading import check
from course_adv.grading.exercises import ex07_ensemble as ex
from course_adv.training import EnsembleAdversarial

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def craft(source, x, y, eps, *, mode="eval", labels=None):
    """FGSM on ``source`` by hand, in ``mode``; the source's mode is restored."""
    was = source.training
    source.train(mode == "train")
    x_req = x.detach().clone().requires_grad_(True)
    logits = source(x_req)
    target = y if labels is None else labels(logits)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, target), x_req)
    source.train(was)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def solution(model, static, x, y, eps, alpha, generator, *, one_pass=False):
    sources = [model, *static]
    k = int(torch.randint(len(sources), (), generator=generator))
    x_adv = craft(sources[k], x, y, eps)
    if one_pass:
        losses = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]), reduction="none")
        return alpha * losses[: len(x)].mean() + (1 - alpha) * losses[len(x) :].mean(), k
    loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
    return loss, k


def _feedback(fn):
    result = check("ensemble_loss", fn)
    return result, " ".join(line for r in result.results for line in r.feedback)


@pytest.mark.parametrize("one_pass", [False, True], ids=["two-passes", "one-pass"])
def test_right_answers_pass_with_one_or_two_forward_passes(one_pass):
    result, text = _feedback(lambda *a: solution(*a, one_pass=one_pass))
    assert result.passed and result.score == result.max_score > 0, text


def test_the_public_cases_draw_every_source_and_the_reference_is_the_library():
    """The cases cover the model itself and both static models; the reference's draw and
    one-pass loss are those of EnsembleAdversarial from the same seed."""
    drawn = set()
    for case in ex.EXERCISE.cases:
        inputs = case.inputs()
        ref = ex.reference_ensemble(case, inputs)
        drawn.add(ref["k"])
        g = torch.Generator().manual_seed(case.seed)
        assert int(torch.randint(ex.N_STATIC + 1, (), generator=g)) == ref["k"]
        assert abs(ref["right"][1] - ref["right"][2]) <= 1e-5 * abs(ref["right"][2])
        tol = 10 * ex._tolerance(case)  # every mistake lies clearly outside the tolerance
        for name in ("predicted labels", "no clean half", "alpha swapped", "train-mode crafting"):
            if name in ref:
                assert not ex._close(ref[name][0], ref["right"][:1], tol), (case, name)
                assert not ex._close(ref[name][1], ref["right"][1:2], tol), (case, name)
        for losses in ref["sources"].values():
            assert not any(ex._close(v, ref["right"], tol) for v in losses), case
    assert drawn == {0, 1, 2}


def _always_current(model, static, x, y, eps, alpha, generator):
    k = int(torch.randint(len(static) + 1, (), generator=generator))
    loss, _ = solution(model, [], x, y, eps, alpha, torch.Generator().manual_seed(0))
    return loss, k


def _off_by_one(model, static, x, y, eps, alpha, generator):
    k = int(torch.randint(len(static) + 1, (), generator=generator))
    x_adv = craft(static[k % len(static)], x, y, eps)  # static[k] instead of [model, *static][k]
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y), k


def _own_predictions(model, static, x, y, eps, alpha, generator):
    sources = [model, *static]
    k = int(torch.randint(len(sources), (), generator=generator))
    x_adv = craft(sources[k], x, y, eps, labels=lambda logits: logits.argmax(1).detach())
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y), k


def _train_mode(model, static, x, y, eps, alpha, generator):
    sources = [model, *static]
    k = int(torch.randint(len(sources), (), generator=generator))
    x_adv = craft(sources[k], x, y, eps, mode="train" if k == 0 else "eval")
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y), k


def _backward_leak(model, static, x, y, eps, alpha, generator):
    sources = [model, *static]
    k = int(torch.randint(len(sources), (), generator=generator))
    sources[k].eval()
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(sources[k](x_req), y).backward()  # fills the source's .grad too
    model.train()
    x_adv = (x + eps * x_req.grad.sign()).clamp(0, 1)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y), k


def _leaves_static_in_train_mode(model, static, x, y, eps, alpha, generator):
    loss, k = solution(model, static, x, y, eps, alpha, generator)
    for m in static:
        m.train()
    return loss, k


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (_always_current, "crafting always on the current model"),
        (_off_by_one, "index the list [model, *static]"),
        (_own_predictions, "with the true labels y"),
        (lambda m, s, x, y, e, a, g: solution(m, s, x, y, e, 0.0, g), "clean half"),
        (lambda m, s, x, y, e, a, g: solution(m, s, x, y, e, 1 - a, g), "alpha weighs the wrong"),
        (_train_mode, "crafted with the model being trained in train mode"),
        (_backward_leak, "gradients leaked into the static models"),
        (_leaves_static_in_train_mode, "static model was left in train mode"),
        (lambda *a: (solution(*a)[0].item(), solution(*a)[1]), "does not back-propagate"),
        (lambda *a: (solution(*a)[0], 5), "source index"),
        (lambda *a: solution(*a)[0], "return a pair"),
    ],
    ids=[
        "always-current",
        "off-by-one",
        "own-predictions",
        "no-clean-half",
        "alpha-swapped",
        "train-mode",
        "backward-leak",
        "static-train-mode",
        "item",
        "wrong-index",
        "no-pair",
    ],
)
def test_typical_mistakes_lose_points_with_a_reason(wrong, says):
    result, text = _feedback(wrong)
    assert result.score < result.max_score
    assert says in text, text


def test_calling_the_course_attack_is_flagged():
    def borrowed(model, static, x, y, eps, alpha, generator):
        sources = [model, *static]
        k = int(torch.randint(len(sources), (), generator=generator))
        x_adv = attacks.fgsm(sources[k], x, y, eps)
        loss = alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)
        return loss, k

    # check() runs in this kernel without the integrity stand-ins, so the answer scores; the
    # spec names attacks.fgsm among the course's answers, which course-adv grade flags
    assert "course_adv.attacks.fgsm" in ex.EXERCISE.function("ensemble_loss").course_answers
    result, text = _feedback(borrowed)
    assert result.passed, text


def test_a_mistake_is_named_alone():
    """An answer with one mistake gets that diagnosis, not a second one about its loss."""
    result, text = _feedback(_own_predictions)
    wrong = [r for r in result.results if not r.passed]
    assert wrong and all(len(r.feedback) == 1 for r in wrong), text


def test_ensemble_training_takes_each_source_about_equally_often_and_never_trains_statics():
    """Tramer et al.'s rotation: over many batches each source is drawn about 1 / (K + 1) of
    the time, and the static models' weights and .grad stay untouched by training."""
    case = ex.EXERCISE.cases[0]
    inputs = case.inputs()
    model, static = ex._fresh(case, inputs)
    before = [p.detach().clone() for m in static for p in m.parameters()]
    objective = EnsembleAdversarial(static, 0.2, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = inputs["x"], inputs["y"]
    torch.manual_seed(0)
    for _ in range(300):
        loss = objective(model, x, y, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    shares = [c / 300 for c in objective.source_counts]
    assert all(0.25 < s < 0.42 for s in shares), shares
    after = [p.detach() for m in static for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(p.grad is None for m in static for p in m.parameters())


def test_a_hidden_case_reads_from_json_and_its_inputs_survive_the_files(tmp_path):
    from course_adv.grading.registry import load_hidden_cases

    path = tmp_path / "hidden.json"
    path.write_text(
        '[{"function": "ensemble_loss", "eps": 0.15, "alpha": 0.45, "seed": 11, "n": 12, '
        '"points": 1}]'
    )
    (case,) = load_hidden_cases(path)
    assert isinstance(case, ex.EnsembleCase) and case.hidden
    inputs = case.inputs()
    case.save_inputs(inputs, tmp_path / "case")
    loaded = case.load_inputs(tmp_path / "case")
    ref, again = ex.reference_ensemble(case, inputs), ex.reference_ensemble(case, loaded)
    assert ref["k"] == again["k"] and ref["right"] == again["right"]
