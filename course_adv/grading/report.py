"""Grades and how they are shown: per case, per notebook, as text, JSON and CSV.

A :class:`CaseResult` is one case's verdict, a :class:`GradeReport` one notebook's grade, a
:class:`Feedback` what ``check()`` shows in a student's notebook. Hidden cases keep their
feedback out of every format.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .registry import all_exercises

__all__ = [
    "CaseResult",
    "GradeReport",
    "Feedback",
    "display_path",
    "format_text",
    "format_json",
    "write_csv",
]


@dataclass
class CaseResult:
    """One case's verdict. Hidden cases keep their feedback out of every report."""

    function: str
    name: str
    hidden: bool
    passed: bool
    points: float
    max_points: float
    feedback: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.hidden:
            data["feedback"] = []
        return data


class _Scored:
    """Points of a list of case results (``self.results``)."""

    results: list[CaseResult]

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)


@dataclass
class GradeReport(_Scored):
    """The grade of one submitted notebook. ``path`` is printable (``display_path``);
    ``flags`` name the course's own answers its functions called (those cases earn nothing);
    ``sandboxed`` says whether it ran in bubblewrap."""

    path: str
    exercise: str | None
    results: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    sandboxed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "exercise": self.exercise,
            "score": self.score,
            "max_score": self.max_score,
            "error": self.error,
            "flags": list(self.flags),
            "sandboxed": self.sandboxed,
            "notes": list(self.notes),
            "cases": [r.as_dict() for r in self.results],
        }


@dataclass
class Feedback(_Scored):
    """What ``check()`` found; shows as a short report in a notebook."""

    function: str
    results: list[CaseResult]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def __repr__(self) -> str:
        head = "all public cases pass" if self.passed else "not there yet"
        lines = [f"{self.function}: {head} ({self.score:g}/{self.max_score:g} points)"]
        lines += _result_lines(self.results, indent="", headers=False)
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _result_lines(results: Sequence[CaseResult], indent: str, headers: bool = True) -> list[str]:
    lines: list[str] = []
    function, previous = None, None
    for r in results:
        if r.function != function:
            function, previous = r.function, None
            if headers:
                lines.append(f"{indent}{function}()")
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"{indent}  {verdict} {r.points:g}/{r.max_points:g}  {r.name}")
        if r.feedback and r.feedback == previous:
            lines.append(f"{indent}        - same as above")
        else:
            lines += [f"{indent}        - {text}" for text in r.feedback]
        previous = r.feedback or previous
    return lines


def format_text(reports: Sequence[GradeReport]) -> str:
    """A report for people: per notebook, per function and case; totals last."""
    lines = []
    for report in reports:
        exercise = f" (exercise {report.exercise})" if report.exercise else ""
        lines.append(f"== {report.path}{exercise}")
        if report.error:
            lines.append(f"  not graded: {report.error}")
        lines += _result_lines(report.results, indent="  ")
        lines += [f"  FLAG: {flag}" for flag in report.flags]
        lines += [f"  note: {note}" for note in report.notes]
        lines.append(f"  score: {report.score:g}/{report.max_score:g}")
        lines.append("")
    if len(reports) > 1:
        width = max(len(r.path) for r in reports)
        lines.append("Scores:")
        lines += [f"  {r.path:<{width}}  {r.score:g}/{r.max_score:g}" for r in reports]
    total, maximum = _totals(reports)
    lines.append(f"Total: {total:g}/{maximum:g}")
    return "\n".join(lines)


def _totals(reports: Sequence[GradeReport]) -> tuple[float, float]:
    return sum(r.score for r in reports), sum(r.max_score for r in reports)


def format_json(reports: Sequence[GradeReport]) -> str:
    """A report for machines: ``{"submissions": [...], "total": ..., "max": ...}``."""
    total, maximum = _totals(reports)
    data = {"submissions": [r.as_dict() for r in reports], "total": total, "max": maximum}
    return json.dumps(data, indent=2)


def write_csv(
    reports: Sequence[GradeReport],
    path: str | os.PathLike,
    functions: Sequence[str] | None = None,
) -> None:
    """One row per notebook: points per graded function (``functions``, default those of the
    exercises graded), the total, the maximum, flags, whether it was sandboxed, any error.
    Written to a temporary file first, so the file is either the old one or complete."""
    if functions is None:
        graded = {r.exercise for r in reports}
        exercises = all_exercises()
        functions = [
            f for name in exercises if name in graded for f in exercises[name].function_names
        ]
    header = ["path", "exercise", *functions, "total", "max", "flags", "sandboxed", "error"]
    rows = []
    for r in reports:
        per_function = {f: sum(c.points for c in r.results if c.function == f) for f in functions}
        graded = {c.function for c in r.results}
        rows.append(
            [r.path, r.exercise or ""]
            + [f"{per_function[f]:g}" if f in graded else "" for f in functions]
            + [f"{r.score:g}", f"{r.max_score:g}", "; ".join(r.flags)]
            + ["yes" if r.sandboxed else "no", r.error or ""]
        )
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        csv.writer(f).writerows([header, *rows])
    os.replace(partial, target)


def display_path(path: str | os.PathLike) -> str:
    """A path as printable text: bytes that are not UTF-8 as ``\\xNN``, control characters
    (newlines, terminal escapes) as ``\\n``, ``\\x1b``; the same in every format."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
