"""The autograder: ``course-adv grade`` for instructors, ``check()`` for students.

One file per job:

- ``spec``: the vocabulary of an exercise spec (``Case``, ``GradedFunction``, ``Exercise``,
  ``Outcome``) and the feedback helpers;
- ``digits``: ``DigitCase``, the case the attack exercises share (a model, test digits, eps);
- ``exercises/exNN_name.py``: one spec per exercise: its public cases, inputs, reference, how to
  call the student's function, how to score it and the diagnoses it gives;
- ``registry``: finds the exercises (every spec file defining ``EXERCISE``) and reads hidden
  cases;
- ``engine``: grades one notebook (run, collect, score) and ``check()``; ``batch``: a class,
  several notebooks at once, and ``course-adv grade``;
- ``isolation``: the job folder, running the child, reading back what it left, clean-up;
  ``sandbox``: the bubblewrap sandbox it runs in; ``child``: the child's side;
  ``integrity``: the instrumented stand-ins that catch a reused course answer;
- ``report``: ``GradeReport`` and the text, JSON and CSV formats.

**Cases.** Each exercise lists the functions a student writes and the public cases they are
graded on. The reference answers are computed in the grader's own process. Instructors add
hidden cases from a JSON file outside the repository (``--hidden FILE`` or the environment
variable ``COURSE_ADV_HIDDEN_CASES``): a list of objects such as::

    [{"function": "fgsm_targeted", "eps": 0.07, "seed": 11, "n": 16, "points": 2, "model": "cnn"},
     {"function": "targeted_success_rate", "eps": 0.15, "seed": 5, "n": 200, "points": 2,
      "batch_size": 64}]

Each object sets the fields of its function's case (see the exercise's spec). Hidden cases
report only pass or fail.

**Isolation.** A submission is untrusted code. ``grade_notebook`` writes the case inputs as
plain data into a fresh job folder and runs the notebook's code cells in a separate interpreter
inside a bubblewrap sandbox (``sandbox``): it sees the Python environment and the course
package read-only and one scratch folder, has no network, and nothing it starts outlives its
time limit. Hidden cases run in a second sandbox whose notes are never shown. Only plain data
comes back, read with exact type checks; every score is computed here, against answers
computed here, and a call that reaches the course's own answer earns nothing and is flagged.

**Feedback.** Per case: points, pass or fail, and what to fix (shape, dtype, the property that
failed, a hint). ``check(function, fn)`` runs the same public cases in the student's own
kernel and returns the same feedback, for the ``check()`` cells of the exercise notebooks.
"""

from .batch import find_notebooks, grade_command, grade_path
from .engine import check, grade_notebook
from .registry import HIDDEN_ENV, all_exercises, load_hidden_cases
from .report import CaseResult, Feedback, GradeReport, format_json, format_text, write_csv
from .spec import Case, Exercise, GradedFunction, GradingError, Outcome

__all__ = [
    "Case",
    "CaseResult",
    "Exercise",
    "Feedback",
    "GradedFunction",
    "GradeReport",
    "GradingError",
    "HIDDEN_ENV",
    "Outcome",
    "check",
    "all_exercises",
    "find_notebooks",
    "format_json",
    "format_text",
    "grade_command",
    "grade_notebook",
    "grade_path",
    "load_hidden_cases",
    "write_csv",
]
