"""The set-up files agree with each other: pyproject.toml, environment.yml, Makefile, CI."""

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(spec_list):
    out = {}
    for spec in spec_list:
        name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", spec.replace(" ", "")).groups()
        out[name.lower()] = rest
    return out


def _conda_dependencies():
    deps = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.-]+)([<>=!].*)?$", line)
        if m and not line.startswith("      "):  # skip the nested pip: list
            deps[m.group(1).lower()] = m.group(2) or ""
    return deps


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    wanted = _requirements(project["dependencies"] + project["optional-dependencies"]["dev"])
    conda = _conda_dependencies()
    for name, spec in wanted.items():
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, (
            f"environment.yml lacks {conda_name} (pyproject asks for {name}{spec})"
        )
        assert conda[conda_name] == spec, (
            f"{conda_name}: environment.yml {conda[conda_name]!r} != pyproject {spec!r}"
        )
    extra = set(conda) - {CONDA_NAMES.get(n, n) for n in wanted} - {"python", "pip"}
    assert not extra, f"environment.yml has packages pyproject.toml lacks: {sorted(extra)}"
    assert conda["python"] == project["requires-python"]


def test_environment_yml_uses_conda_forge_only():
    text = (ROOT / "environment.yml").read_text()
    channels = re.search(r"channels:\n((?:\s+-.*\n)+)", text).group(1)
    assert [c.strip("- \n") for c in channels.splitlines()] == ["conda-forge", "nodefaults"]


def test_torch_is_never_required_newer_than_2_14_1():
    deps = _requirements(_pyproject()["project"]["dependencies"])
    assert "<=2.14.1" in deps["torch"] and "<=0.29.1" in deps["torchvision"]
    assert "==" not in "".join(deps.values()), "use version ranges, not exact pins"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab:", "test:", "nbval:"):
        assert target in makefile
    assert "COURSE_ADV_QUICK=1" in makefile and "--nbval-current-env" in makefile


def test_console_script_is_declared():
    assert _pyproject()["project"]["scripts"]["course-adv"] == "course_adv.cli:main"


def test_make_lab_gives_the_server_the_venv_first_on_path_and_no_agg_backend(tmp_path):
    """`make lab` as a student meets it: JupyterLab's terminals and `!` commands find the venv's
    `course-adv` and python, and matplotlib keeps its interactive inline backend (Agg is for tests).
    The jupyter command is swapped for a script that prints the environment it was started with."""
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    probe = tmp_path / "fake-jupyter"
    probe.write_text(
        "#!/bin/sh\n"
        'echo "args=$*"\n'
        'echo "MPLBACKEND=${MPLBACKEND-<unset>}"\n'
        'echo "course-adv=$(command -v course-adv)"\n'
        'echo "python=$(command -v python)"\n'
    )
    probe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PATH"] = "/usr/bin:/bin"  # as a fresh login shell would have it: no venv on it
    stamp = ".venv/.course-adv-installed"
    result = subprocess.run(
        ["make", "-s", "-o", stamp, "lab", f"LAB_JUPYTER={probe}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert out["MPLBACKEND"] == "<unset>", "make lab must not force the Agg backend on students"
    venv_bin = str(ROOT / ".venv" / "bin")
    assert out["course-adv"] == f"{venv_bin}/course-adv"
    assert out["python"] == f"{venv_bin}/python"
    assert out["args"].startswith("lab ")
    # JupyterLab's terminals: a bash that reads the user's ~/.bashrc, then activates the venv
    config = re.search(r"--config=(\S+)", out["args"]).group(1)
    rcfile = re.search(r'"--rcfile", "([^"]+)"', Path(config).read_text()).group(1)
    (tmp_path / ".bashrc").write_text('export PATH="/opt/user-tools:$PATH"\n')
    shell = subprocess.run(
        ["bash", "--rcfile", rcfile, "-i", "-c", "command -v course-adv; echo $PATH"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    found, path = shell.stdout.split()[-2:]
    assert found == f"{venv_bin}/course-adv"
    assert path.startswith(venv_bin) and "/opt/user-tools" in path  # the user's own rc kept


def test_make_warm_runs_every_notebook_in_order_and_stops_at_a_failure(tmp_path):
    """`make warm` (INSTRUCTORS.md) executes each notebook once, in order, into a temporary
    folder (the repository's notebooks stay untouched), and stops with the failing notebook's
    log and a non-zero exit."""
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    log = tmp_path / "calls"
    fake = tmp_path / "jupyter"
    fake.write_text(
        "#!/bin/bash\n"
        'echo "quick=${COURSE_ADV_QUICK:-} $*" >> "$FAKE_LOG"\n'
        'case "$*" in *"$FAIL_ON"*) echo "Traceback: boom"; exit 1;; esac\n'
    )
    fake.chmod(0o755)
    stamp = ".venv/.course-adv-installed"
    notebooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))

    def warm(*args: str, fail_on: str = "never") -> subprocess.CompletedProcess:
        env = {**os.environ, "FAKE_LOG": str(log), "FAIL_ON": fail_on}
        return subprocess.run(
            ["make", "-s", "-o", stamp, "warm", f"LAB_JUPYTER={fake}", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    result = warm("QUICK=1")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[-1] for c in calls] == notebooks
    assert all(c.startswith("quick=1 nbconvert") and "--execute" in c for c in calls)
    out_dirs = {re.search(r"--output-dir (\S+)", c).group(1) for c in calls}
    assert len(out_dirs) == 1 and not any(Path(d).is_relative_to(ROOT) for d in out_dirs)
    assert not Path(out_dirs.pop()).exists(), "the executed copies are deleted afterwards"
    assert result.stdout.splitlines()[-1].startswith("warm: ")

    log.unlink()
    result = warm(fail_on=notebooks[1])
    assert result.returncode != 0
    assert "Traceback: boom" in result.stdout and f"{notebooks[1]} failed" in result.stdout
    assert [c.split()[-1] for c in log.read_text().splitlines()] == notebooks[:2]
    assert all(c.startswith("quick= ") for c in log.read_text().splitlines())
