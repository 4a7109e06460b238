"""Structure checks on every teaching notebook, without running any of them.

nbval runs the notebooks (``make test``); these checks catch what running cannot: outputs left
in the stored file, a missing opening (learning goals, CPU time), a missing import of the
module, network access at run time, quick mode read around ``course_adv.utils``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]

# what a code cell must not do at run time: reach the network or install packages
NETWORK = re.compile(
    r"https?://|\burllib\b|\brequests\b|\bhttpx\b|\bsocket\b|download\s*=\s*True|"
    r"^\s*[!%]\s*(pip|wget|curl|git)\b|\bsubprocess\b",
    re.MULTILINE,
)
TIME = re.compile(r"\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?)\b", re.IGNORECASE)
MAX_CODE_LINES = 20


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_course_has_its_first_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"00_setup.ipynb", "02_fgsm.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_nbformat_and_python3_kernel(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_are_stripped(path):
    nb = _read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has stored outputs; run nbstripout {path.name}"
            assert cell.execution_count is None, f"cell {i} has an execution count"
    assert "widgets" not in nb.metadata, "widget state is stored; run nbstripout"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_goals_prerequisites_and_cpu_time(path):
    first = _read(path).cells[0]
    assert first.cell_type == "markdown"
    text = first.source.lower()
    assert "learning goals" in text
    assert "prerequisites" in text
    assert "cpu" in text and "quick mode" in text
    assert len(TIME.findall(first.source)) >= 2, "state the measured full and quick run times"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ends_with_a_summary_and_what_comes_next(path):
    nb = _read(path)
    tail = " ".join(c.source for c in nb.cells[-2:] if c.cell_type == "markdown").lower()
    assert "summary" in tail
    prefix = path.name.split("_")[0]
    exercises = sorted((ROOT / "exercises").glob(f"{prefix}_*.ipynb"))
    for exercise in exercises:
        assert f"exercises/{exercise.name}" in tail, f"point to exercises/{exercise.name}"
    if not exercises:
        assert re.search(r"\d\d_\w+\.ipynb", tail), "point to the notebook or exercise next"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_imports_the_course_module(path):
    code = "\n".join(_code(_read(path)))
    assert re.search(r"^\s*(from course_adv\b|import course_adv\b)", code, re.MULTILINE)
    assert "%matplotlib inline" in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_network_or_installs_at_run_time(path):
    for i, source in enumerate(_code(_read(path))):
        match = NETWORK.search(source)
        assert match is None, f"code cell {i} reaches out at run time: {match.group(0)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_quick_mode_is_read_only_through_the_module(path):
    for i, source in enumerate(_code(_read(path))):
        assert "COURSE_ADV_QUICK" not in source, f"code cell {i}: use course_adv.utils.quick_mode()"
        assert "os.environ" not in source, f"code cell {i}: settings come from course_adv.utils"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_code_cells_are_short_and_widgets_ignored_by_nbval(path):
    for i, source in enumerate(_code(_read(path))):
        lines = [line for line in source.splitlines() if line.strip()]
        assert len(lines) <= MAX_CODE_LINES, f"code cell {i} has {len(lines)} lines; split it"
        if re.search(r"\.widget\b", source):
            assert source.startswith("# NBVAL_IGNORE_OUTPUT"), (
                f"code cell {i} shows a widget; start it with # NBVAL_IGNORE_OUTPUT"
            )


def _assertions(source: str) -> list[ast.Assert]:
    """The assert statements of a code cell (IPython magics and shell escapes dropped)."""
    lines = [
        "pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    ]
    return [node for node in ast.walk(ast.parse("\n".join(lines))) if isinstance(node, ast.Assert)]


def _checks_a_computed_value(node: ast.Assert) -> bool:
    """An assertion about something the notebook computed: its test reads a variable or calls
    a function, so it can fail (``assert True`` or ``assert 0.5 < 1`` cannot)."""
    return any(isinstance(n, ast.Name | ast.Call | ast.Attribute) for n in ast.walk(node.test))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_claims_are_checked_by_assertions(path):
    asserts = [a for source in _code(_read(path)) for a in _assertions(source)]
    constant = [ast.unparse(a) for a in asserts if not _checks_a_computed_value(a)]
    assert not constant, f"assertions that cannot fail: {constant}"
    assert len(asserts) >= 3, "check the notebook's claims with assertions"


def test_an_assertion_that_cannot_fail_is_caught():
    (always,) = _assertions("assert True, 'holds whatever the notebook computed'")
    (real,) = _assertions("%matplotlib inline\nassert acc[0.1] < 0.5")
    assert not _checks_a_computed_value(always) and _checks_a_computed_value(real)


ALL_NOTEBOOKS = sorted(
    p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb")
)
PLANNED = "not in the course yet"


@pytest.mark.parametrize(
    "path", ALL_NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in ALL_NOTEBOOKS]
)
def test_links_to_notebooks_that_do_not_exist_say_so(path):
    """A student who follows "Next: 03_..." must not hunt for a file that is not there, nor
    skip one that is there because an older sentence still calls it planned."""
    existing = {p.name for p in ALL_NOTEBOOKS}
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "markdown":
            continue
        for match in re.finditer(r"\d\d_\w+\.ipynb", cell.source):
            after = cell.source[match.end() : match.end() + 40]
            if match.group(0) in existing:
                assert PLANNED not in after, (
                    f"cell {i} calls {match.group(0)} planned, but it is in the course now"
                )
                continue
            after = cell.source[match.end() : match.end() + 120]
            assert PLANNED in after, (
                f"cell {i} points to {match.group(0)}, which does not exist yet; "
                f"say so right after it: *({PLANNED}: planned)*"
            )


@pytest.mark.parametrize(
    "path", ALL_NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in ALL_NOTEBOOKS]
)
def test_a_notebook_that_builds_a_model_seeds_it_first(path):
    """Run twice, a notebook prints the same numbers: a model it builds itself is seeded first
    (zoo models and ``train(seed=...)`` seed themselves; ``build_model`` and ``nn.Module``
    constructors draw from the global random stream)."""
    code = "\n".join(_code(_read(path)))
    code = re.sub(r"count_parameters\(models\.build_model\(\w+\)\)", "", code)  # no weights used
    first_build = re.search(r"build_model\(|\bnn\.Sequential\(|models\.[A-Z]\w*\(", code)
    if first_build is None:
        return
    seeded = re.search(r"seed_everything\(|manual_seed\(", code[: first_build.start()])
    if seeded is None:  # a helper function that builds models must seed inside itself
        body = code[code.rfind("\ndef ", 0, first_build.start()) : first_build.start()]
        seeded = re.search(r"seed_everything\(|manual_seed\(", body)
    assert seeded, f"seed before the first model is built ({first_build.group(0)})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_slider_says_what_a_reopened_notebook_shows(path):
    """A saved notebook has no live widgets: JupyterLab shows "Error displaying widget: model
    not found" until the cell runs again. A notebook with a widget says so next to it."""
    nb = _read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(r"\.widget\b", cell.source):
            before = " ".join(
                c.source for c in nb.cells[max(0, i - 3) : i] if c.cell_type == "markdown"
            )
            assert "model not found" in before, f"cell {i}: say what a reopened notebook shows"
