"""Benchmarks that print their numbers (timings never go into tests).

    python -m course_adv.bench attacks [--n 1000] [--repeats 7] [--device cpu] [--steps 20]

``attacks``: the time of PGD-20 on the small CNN and 1,000 test digits, divided by the time of
20 bare passes on the same model and batch, each a forward pass and the gradient of the loss
with respect to the input (the floor no gradient attack can beat). Goal: <= 1.03 on CPU.
The two are timed in alternation (which goes first alternates too), and the median of the
per-repeat ratios is reported with its range, so a busy machine shows up as a wide range.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from course_adv.attacks import pgd
from course_adv.data import load_data
from course_adv.models import SmallCNN
from course_adv.utils import get_device

__all__ = ["bench_attacks", "main"]


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()`` (waiting for the GPU where there is one).

    CPU time (of this process, all its threads) hardly counts the time other processes hold
    the cores, so on a shared machine it is the steadier of the two.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _attacks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1000, help="test digits in the batch (1000)")
    parser.add_argument("--repeats", type=int, default=7, help="alternating timed repeats (7)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: get_device())")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps = bare passes (20)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (untrained) model")


def bench_attacks(args: argparse.Namespace) -> dict[str, float]:
    """PGD-``steps`` time over ``steps`` bare forward + input-gradient passes; prints and returns."""
    if args.n < 1 or args.repeats < 1 or args.steps < 1:
        raise SystemExit("--n, --repeats and --steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    data = load_data()
    x, y = data.x_test[: args.n].to(device), data.y_test[: args.n].to(device)
    torch.manual_seed(args.seed)
    model = SmallCNN().to(device).eval()  # timing does not need a trained model
    eps, alpha = 0.3, 0.01  # Madry et al.'s MNIST budget and step size

    def bare() -> None:
        for _ in range(args.steps):
            x_in = x.detach().requires_grad_()
            loss = F.cross_entropy(model(x_in), y, reduction="sum")
            torch.autograd.grad(loss, x_in)

    def attack() -> None:
        pgd(model, x, y, eps, alpha, args.steps)

    bare(), attack()  # warm-up: allocator, kernels, caches
    wall: dict[str, list[float]] = {"bare": [], "pgd": []}
    cpu: dict[str, list[float]] = {"bare": [], "pgd": []}
    for repeat in range(args.repeats):
        order = [("bare", bare), ("pgd", attack)]
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            seconds, cpu_seconds = _timed(fn, device)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    ratios = [p / b for p, b in zip(wall["pgd"], wall["bare"], strict=True)]
    cpu_ratios = [p / b for p, b in zip(cpu["pgd"], cpu["bare"], strict=True)]
    result = {
        "bare_s": statistics.median(wall["bare"]),
        "pgd_s": statistics.median(wall["pgd"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_of_fastest": min(wall["pgd"]) / min(wall["bare"]),
        "cpu_ratio": statistics.median(cpu_ratios),
    }

    def spread(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"median {statistics.median(values):.3f} s (min {low:.3f}, max {high:.3f})"

    n_threads = torch.get_num_threads()
    threads = f", {n_threads} thread{'s' * (n_threads != 1)}" if device.type == "cpu" else ""
    print(
        f"attacks: SmallCNN (seed {args.seed}), {len(x)} test digits, {device}{threads}, "
        f"{args.repeats} alternating repeats"
    )
    print(f"  {args.steps} bare passes (forward + input gradient): {spread(wall['bare'])}")
    print(f"  PGD-{args.steps} (eps={eps}, alpha={alpha}, labels given):  {spread(wall['pgd'])}")
    print(
        f"  ratio PGD-{args.steps} / bare passes: {result['ratio']:.3f} (median of per-repeat "
        f"ratios, range {result['ratio_min']:.3f} to {result['ratio_max']:.3f}); goal <= 1.03"
    )
    print(
        f"  steadier on a busy machine: fastest / fastest {result['ratio_of_fastest']:.3f}, "
        f"CPU-time ratio {result['cpu_ratio']:.3f}"
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_adv.bench", description="Benchmarks that print their numbers."
    )
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    attacks = commands.add_parser("attacks", help="PGD-20 time over 20 bare passes")
    _attacks_arguments(attacks)
    attacks.set_defaults(run=bench_attacks)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
