"""The sandbox against a determined student: one test per attack of issue 10, each against the
real bubblewrap sandbox, with honest classmates graded in the same run.

Every attacker and two honest classmates sit in one class folder, graded once through the
command line (``--jobs 2``, hidden cases, a CSV). Each test then checks one attack: it earns
nothing it did not compute, and the honest classmates keep full marks and unchanged files. The
attackers are given the absolute paths of the class folder, the hidden-cases file and the CSV,
the worst case (a real student would have to find them). Without bubblewrap these tests skip,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import site
import socket
import time
from pathlib import Path

import pytest
from test_grading import EXERCISE, HIDDEN, HIDDEN_MAX, _processes_with, _step, submission

import course_adv
from course_adv.grading import (
    all_exercises,
    format_json,
    format_text,
    grade_notebook,
    grade_path,
    load_hidden_cases,
    write_csv,
)
from course_adv.grading.sandbox import PROCESSES, missing_reason

MAX = all_exercises()["02_fgsm"].max_points
SECRET = "grader-secret-4f1c9"  # in the grader's environment: must never reach a report
HIDDEN_MARK = {"function": "fgsm_targeted", "eps": 0.0731, "seed": 98765, "n": 3, "points": 1}
STUB = _step('raise NotImplementedError("your code here")')
DAEMON = "daemon-7c2e"  # in the command line of the escaping daemon


@pytest.fixture(scope="module", autouse=True)
def _needs_the_sandbox():
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the sandbox tests, but: {reason}")
        pytest.skip(reason)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _installed() -> dict[str, str]:
    """What a later grading run would load: the course package and every site-packages .pth."""
    files = _digest(Path(course_adv.__file__).parent)
    for folder in site.getsitepackages():
        files.update(
            {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).glob("*.pth")}
        )
    return files


def _attackers(paths: dict[str, str]) -> dict[str, tuple]:
    """name: (fgsm_targeted, targeted_success_rate, extra cells); None keeps the solution's
    function."""
    p = {k: repr(paths.get(k, "")) for k in ("class", "alice", "bob", "hidden", "csv", "port")}
    return {
        "persist": (
            STUB,
            None,
            (
                """
            import course_adv, os, site, sysconfig
            from pathlib import Path
            package = Path(course_adv.__file__).parent
            targets = [package / "grading" / "child.py", package / "grading" / "engine.py"]
            targets += [Path(d) / "zz_course_adv.pth" for d in site.getsitepackages()]
            targets += [Path(sysconfig.get_paths()["purelib"]) / "zz_course_adv.pth"]
            done = []
            for target in targets:
                try:
                    with open(target, "a") as f:
                        f.write("\\nimport os; os.environ['PWNED'] = '1'\\n")
                    done.append(str(target))
                except OSError:
                    pass
            assert not done, f"persisted into {done}"
            """,
            ),
        ),
        "escape": (
            STUB,
            None,
            (
                f"""
            import subprocess, sys, textwrap
            code = textwrap.dedent('''
                import os, sys, time
                end = time.time() + 40
                while time.time() < end:
                    for target in sys.argv[2:]:
                        try:
                            with open(target, "a") as f:
                                f.write("pwned")
                        except OSError:
                            pass
                    time.sleep(0.2)
            ''')
            subprocess.Popen(
                [sys.executable, "-c", code, "{DAEMON}", {p["alice"]}, {p["csv"]}],
                start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            """,
            ),
        ),
        "spy": (
            STUB,
            None,
            (
                f"""
            import glob, os, shutil
            found = []
            for pid in os.listdir("/proc"):
                for link in ("cwd", "root"):
                    try:
                        found += glob.glob(os.path.join(os.readlink(f"/proc/{{pid}}/{{link}}"), "*.ipynb"))
                    except OSError:
                        pass
            found += glob.glob(os.path.join({p["class"]}, "*.ipynb"))
            assert not found, f"found classmates: {{found}}"
            """,
                f"""
            import json
            nb = json.load(open({p["alice"]}))
            for cell in nb["cells"]:
                if cell["cell_type"] == "code" and "def fgsm_targeted" in "".join(cell["source"]):
                    exec("".join(cell["source"]))
            """,
                f"""
            with open({p["bob"]}, "w") as f:
                f.write("{{}}")
            """,
                f"""
            import socket
            socket.create_connection(("127.0.0.1", int({p["port"]})), timeout=3)
            """,
            ),
        ),
        "alias_import": (
            _step("""
            import importlib
            attacks = importlib.import_module("course_adv." + "att" + "acks")
            return attacks.fgsm(model, x, target, eps, targeted=True)
            """),
            None,
            (),
        ),
        "alias_globals": (
            _step("""
            attacks = __import__("course_adv." + "attacks", fromlist=["pgd"])
            return attacks.pgd.__globals__["fgsm"](model, x, target, eps, targeted=True)
            """),
            None,
            (),
        ),
        "answer_key": (
            STUB,
            None,
            (
                """
            import course_adv, json
            from pathlib import Path
            key = Path(course_adv.__file__).parents[1] / "solutions" / "02_fgsm.ipynb"
            for cell in json.loads(key.read_text())["cells"]:
                if cell["cell_type"] == "code" and "def fgsm_targeted" in "".join(cell["source"]):
                    exec("".join(cell["source"]))
            """,
            ),
        ),
        "keep_attack": (
            _step(
                "kept = globals().get('KEPT')\n"
                "return kept[0](model, x, target, eps) if kept else x.clone()"
            ),
            """
            def targeted_success_rate(model, x, target, eps, attack=None, batch_size=100):
                globals().setdefault("KEPT", []).append(attack)
                hits = 0
                for start in range(0, len(x), batch_size):
                    xb, tb = x[start : start + batch_size], target[start : start + batch_size]
                    with torch.no_grad():
                        hits += (model(attack(model, xb, tb, eps)).argmax(1) == tb).sum().item()
                return hits / len(x)
            """,
            (),
        ),
        "leak": (
            STUB,
            None,
            tuple(
                f"""
            import json, os
            raise RuntimeError({source})
            """
                for source in (
                    'json.dumps(json.load(open("/job/job.json"))["cases"])',
                    f"open({p['hidden']}).read()",
                    'open("/proc/1/cmdline").read() + open("/proc/1/environ").read()',
                    'open(f"/proc/{os.getppid()}/environ").read()',
                    "str(dict(os.environ))",
                )
            ),
        ),
        "deep": (
            None,
            None,
            (
                """
            import os
            for _ in range(1500):
                os.mkdir("d")
                os.chdir("d")
            os.chmod(".", 0)
            """,
            ),
        ),
        "fifo": (
            _step("""
            import os
            out = "/scratch/out"
            if not os.path.exists(out + "/c4.x_after.npy"):
                for name in ("cells.json", "progress.json"):
                    os.remove(f"{out}/{name}")
                    os.mkfifo(f"{out}/{name}")
                os.symlink("/dev/zero", out + "/c4.x_after.npy")
            x_adv = x.clone().detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), target), x_adv)
            return (x_adv - eps * grad.sign()).clamp(0, 1).detach()
            """),
            None,
            (),
        ),
        "fifo_log": (
            STUB,
            None,
            (
                """
            import os, sys
            logs = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in (1, 2)]
            for path in [*logs, "../stderr.txt", "../logs/stderr"]:
                try:
                    os.remove(path)
                    os.mkfifo(path)  # the old grader read its log back by name: it hung
                except OSError:
                    pass
            print("noise", file=sys.stderr, flush=True)
            os._exit(3)
            """,
            ),
        ),
        "slow": (None, None, ("import time\ntime.sleep(4)",) * 3),
        "forks": (
            STUB,
            None,
            (
                """
            import subprocess
            children = []
            try:
                for _ in range(400):
                    children.append(subprocess.Popen(["sleep", "60"]))
            except OSError:
                raise RuntimeError(f"stopped after {len(children)} processes") from None
            """,
            ),
        ),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    folder = root / "class"
    folder.mkdir()
    hidden = root / "hidden.json"
    hidden.write_text(json.dumps([*HIDDEN, HIDDEN_MARK]))
    table = root / "grades.csv"
    paths = {
        "class": str(folder),
        "alice": str(folder / "alice_02_fgsm.ipynb"),
        "bob": str(folder / "bob_02_fgsm.ipynb"),
        "hidden": str(hidden),
        "csv": str(table),
    }
    listener = socket.create_server(("127.0.0.1", 0))  # the grader's machine, as a classmate
    listener.setblocking(False)
    paths["port"] = str(listener.getsockname()[1])
    honest = {
        "alice": submission(folder, "alice_02_fgsm"),
        "bob": submission(folder, "bob_02_fgsm"),
    }
    for name, (step, rate, extra) in _attackers(paths).items():
        submission(folder, f"{name}_02_fgsm", step, rate, extra)
    odd = os.fsencode(folder) + b"/caf\xe9_02_fgsm.ipynb"  # not UTF-8
    os.rename(submission(root, "odd"), odd)
    fake = folder / "evil\n  score: 10" / "10 (instructor override)\x1b[2K_02_fgsm.ipynb"
    fake.parent.mkdir()
    fake.write_bytes(EXERCISE.read_bytes())
    honest_bytes = {name: path.read_bytes() for name, path in honest.items()}
    installed = _installed()

    os.environ["GRADER_SECRET"] = SECRET
    started = time.perf_counter()
    try:
        reports = grade_path(folder, hidden=load_hidden_cases(hidden), jobs=2, timeout=12)
    finally:
        del os.environ["GRADER_SECRET"]
    seconds = time.perf_counter() - started
    write_csv(reports, table)
    rows = list(csv.DictReader(table.open(newline="", encoding="utf-8")))
    report = json.loads(format_json(reports))
    by_name = {s["path"].rsplit("/", 1)[-1].removesuffix("_02_fgsm.ipynb"): s for s in report["submissions"]}  # fmt: skip
    try:
        listener.accept()
        reached = True
    except BlockingIOError:
        reached = False
    listener.close()
    return {
        "reached": reached,
        "by_name": by_name,
        "text": format_text(reports),
        "rows": rows,
        "table": table,
        "honest": honest,
        "honest_bytes": honest_bytes,
        "installed": installed,
        "seconds": seconds,
        "folder": folder,
    }


def _points(got: dict, function: str, hidden: bool | None = None) -> float:
    return sum(
        c["points"]
        for c in got["cases"]
        if c["function"] == function and (hidden is None or c["hidden"] == hidden)
    )


def test_honest_classmates_keep_full_marks_and_their_files(graded):
    print(f"graded {len(graded['by_name'])} notebooks twice in {graded['seconds']:.0f} s")
    for name in ("alice", "bob", "caf\\xe9"):
        got = graded["by_name"][name]
        assert got["score"] == got["max_score"] == MAX + HIDDEN_MAX + 1, json.dumps(got, indent=1)
        assert got["sandboxed"] and not got["flags"]
    for name, path in graded["honest"].items():
        assert path.read_bytes() == graded["honest_bytes"][name], f"{name}'s notebook changed"


def test_persistence_into_the_course_or_site_packages_fails(graded):
    got = graded["by_name"]["persist"]
    assert _points(got, "fgsm_targeted") == 0
    assert not any("persisted into" in note for note in got["notes"]), got["notes"]
    assert _installed() == graded["installed"], "the installed course or a .pth file changed"
    later = grade_notebook(EXERCISE, hidden=[])  # a later run of an untouched exercise
    assert later.score == 0 and later.sandboxed


def test_an_escaping_daemon_dies_with_the_sandbox(graded):
    time.sleep(1)
    assert _processes_with(DAEMON) == [], "the daemon outlived grading"
    assert "pwned" not in graded["table"].read_text(encoding="utf-8")
    assert _points(graded["by_name"]["escape"], "fgsm_targeted") == 0


def test_classmates_can_be_neither_found_nor_copied_nor_changed(graded):
    got = graded["by_name"]["spy"]
    assert _points(got, "fgsm_targeted") == 0
    notes = " ".join(got["notes"])
    assert not graded["reached"], "no network, not even to the grader's own machine"
    assert "ConnectionRefusedError" in notes or "unreachable" in notes
    assert "found classmates" not in notes
    assert "FileNotFoundError" in notes or "PermissionError" in notes
    for name, path in graded["honest"].items():  # bob's file was the one to be overwritten
        assert path.read_bytes() == graded["honest_bytes"][name]


@pytest.mark.parametrize("name", ["alias_import", "alias_globals"])
def test_aliasing_the_course_fgsm_earns_nothing_and_is_flagged(graded, name):
    """Calling course_adv.attacks.fgsm(..., targeted=True) is the answer: flagged, no points."""
    got = graded["by_name"][name]
    assert _points(got, "fgsm_targeted") == 0, "public and hidden fgsm cases alike"
    assert _points(got, "targeted_success_rate") == 4 + 1, "its own loop still counts"
    assert got["flags"] == ["fgsm_targeted() calls the course's own course_adv.attacks.fgsm"]
    row = next(r for r in graded["rows"] if Path(r["path"]).name == f"{name}_02_fgsm.ipynb")
    assert "course_adv.attacks.fgsm" in row["flags"] and float(row["fgsm_targeted"]) == 0
    assert "FLAG: fgsm_targeted() calls the course's own" in graded["text"]


def test_the_answer_key_is_out_of_reach(graded):
    got = graded["by_name"]["answer_key"]
    assert _points(got, "fgsm_targeted") == 0
    assert any("FileNotFoundError" in note for note in got["notes"])


def test_keeping_the_loops_attack_does_not_answer_the_step(graded):
    got = graded["by_name"]["keep_attack"]
    assert _points(got, "fgsm_targeted") == 0, "the hidden step case included"
    assert _points(got, "targeted_success_rate") == 4 + 1


def test_nothing_secret_leaks_into_the_reports(graded):
    got = graded["by_name"]["leak"]
    everything = json.dumps(graded["by_name"]) + graded["text"]
    assert "98765" not in everything and "0.0731" not in everything, "a hidden case leaked"
    assert SECRET not in everything, "the grader's environment leaked"
    assert str(graded["folder"]) not in " ".join(got["notes"])
    assert any("/job/job.json" not in n and "RuntimeError" in n for n in got["notes"])


def test_a_deep_folder_chain_does_not_stop_the_class(graded):
    got = graded["by_name"]["deep"]
    assert got["error"] is None and got["score"] == got["max_score"]
    assert len(graded["rows"]) == len(graded["by_name"])


def test_planted_fifos_and_links_neither_hang_nor_flood_the_grader(graded):
    got = graded["by_name"]["fifo"]
    assert _points(got, "fgsm_targeted", hidden=False) == 6, json.dumps(got, indent=1)
    assert graded["seconds"] < 600


def test_a_log_replaced_by_a_fifo_neither_hangs_nor_hides_the_error(graded):
    notes = " ".join(graded["by_name"]["fifo_log"]["notes"])
    assert "ended the grading process early (exit code 3)" in notes and "noise" in notes


def test_odd_file_names_are_printed_safely_everywhere(graded):
    assert "\x1b" not in graded["text"] and "\x1b" not in graded["table"].read_text()
    lines = graded["text"].splitlines()
    assert not any(line.startswith("  score: 10/10 (instructor override)") for line in lines)
    assert "caf\\xe9_02_fgsm.ipynb" in graded["text"]
    paths = [row["path"] for row in graded["rows"]]
    assert len(paths) == len(graded["by_name"]) == 2 + len(_attackers({})) + 2
    assert any(path.endswith("caf\\xe9_02_fgsm.ipynb") for path in paths)
    assert any("\\n  score: 10/10 (instructor override)\\x1b[2K" in path for path in paths)


def test_a_fork_bomb_meets_the_process_limit(graded):
    notes = " ".join(graded["by_name"]["forks"]["notes"])
    assert "stopped after" in notes, notes
    started = int(notes.split("stopped after ")[1].split()[0])
    assert 0 < started < PROCESSES


def test_slow_exploration_cells_keep_the_points(graded):
    got = graded["by_name"]["slow"]
    assert got["score"] == got["max_score"]
    assert any("was still running" in note and "cell 6" in note for note in got["notes"])
