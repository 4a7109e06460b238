"""The README and INSTRUCTORS.md keep up with the course: every notebook in the README's table
(none still "planned"), every exercise in the instructors' list of common mistakes."""

import re
from pathlib import Path

from course_adv.grading import all_exercises

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_lists_every_notebook_with_its_measured_times():
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| \d\d \| `(\d\d_\w+\.ipynb)` \|.*$", readme, re.M)}  # fmt: skip
    assert set(rows) == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for name, row in rows.items():
        assert "planned" not in row, f"{name} exists: the README still calls it planned"
        assert len(re.findall(r"[\d¼½¾]\s*(?:s|min)\b", row)) >= 3, (
            f"{name}: first / cached / quick"
        )


def test_instructors_guide_is_linked_and_covers_every_exercise():
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "INSTRUCTORS.md").read_text()
    assert "](INSTRUCTORS.md)" in readme
    sections = set(re.findall(r"^### (\d\d) · ", guide, re.M))
    assert sections == {name[:2] for name in all_exercises()}, "a section per exercise"
    for name, exercise in all_exercises().items():
        section = guide.split(f"### {name[:2]} · ", 1)[1].split("\n### ", 1)[0]
        for graded in exercise.functions:
            assert f"`{graded.name}`" in section.splitlines()[0], f"{name}: {graded.name}"
