"""The notebooks' checks: live answers judged against the student's own lab, fixed facts graded
by the instructor, every try recorded.

No answer, hash of an answer or salt is in any file a student reads. Each exercise of
``exercises.py`` is one of two kinds:

- **live**: its answer is what the student's lab shows right now (read from the lab's nodes
  with ``lab.exec_in``) or a value drawn for that lab at ``lab up`` (``lab.drawn()``, see
  ``vpnlab/lab/draw.py``). :func:`judge` compares; a value copied from another lab, an earlier
  run or the notes is wrong in this one. Never compared with what the notebook recorded.
- **fixed fact** (a True/False, a small count, a name from the notes): not judged one by one
  in the student's process. :func:`check_answer` records the answer ("graded by your instructor");
  the instructor edition's ``### BEGIN HIDDEN TESTS`` block grades all of a notebook's facts at
  once with :func:`grade_facts`, so guessing one earns nothing. nbgrader strips that block from
  the student edition (``scripts/student-edition.sh``).

The grade comes from where the student has no write access (DESIGN.md section 6): nbgrader's
autograde re-running the submission in a fresh lab (the grade cells call :func:`grade` and
:func:`grade_facts`), or the hub's grader service calling :func:`judge` on a student's live lab.
In the student's own notebook :func:`check_answer` is practice: feedback, and a line in the progress
file (``progress.py``) that the student owns and that is no grade.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Collection

from vpnlab.core.errors import VpnlabError
from vpnlab.course.exercises import EXERCISES, Exercise
from vpnlab.course.labview import LabView
from vpnlab.course.progress import Attempt, load, record
from vpnlab.lab.nodes import exec_in
from vpnlab.lab.state import drawn_values

MIN_EXPLANATION_WORDS = 8
FACT_RECORDED = "recorded, graded by your instructor"
__all__ = [
    "LabView",
    "LocalLab",
    "check_answer",
    "explain",
    "grade",
    "grade_facts",
    "judge",
    "predict",
]


class LocalLab:
    """The :class:`LabView` of the lab ``prefix`` on this machine, read through ``vpnlab.lab``
    (the grade cells build their own: they never ask an object the student's code can change)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def exec_in(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return exec_in(self.prefix, node, argv, capture_output=True, text=True, timeout=timeout)

    def drawn(self) -> dict[str, object]:
        return drawn_values(self.prefix)


def canonical(value: object) -> str:
    """The typed text answers are compared by: ``bool:True``, ``num:32``, ``str:tun0``.

    Strings are compared stripped and lower-case; ints and integral floats are one number;
    a bool is never a number.
    """
    if isinstance(value, bool):
        return f"bool:{value}"
    if isinstance(value, int | float):
        return f"num:{int(value)}" if float(value).is_integer() else f"num:{float(value)!r}"
    if isinstance(value, str):
        return "str:" + " ".join(value.split()).lower()
    raise TypeError(f"not an answer type: {type(value).__name__}")


def _kind_ok(kind: type, answer: object) -> bool:
    if kind is bool:
        return isinstance(answer, bool)
    if kind is int:  # 2.0 is 2; True is not 1
        return isinstance(answer, int | float) and not isinstance(answer, bool)
    return isinstance(answer, kind)


def _spec(exercise: str) -> Exercise:
    try:
        return EXERCISES[exercise]
    except KeyError:
        raise ValueError(f"no exercise {exercise!r} in vpnlab/course/exercises.py") from None


def judge(exercise: str, answer: object, lab: LabView) -> bool:
    """Whether ``answer`` is what ``lab`` shows now for the live ``exercise`` (nothing printed,
    nothing recorded). The one judging entry: the notebook's check, nbgrader's grade cells and
    the hub's grader service call it.

    Raises ValueError for an unknown exercise or a fixed fact (graded by hidden tests only).
    A lab that cannot show the value (down, no tun0) judges every answer wrong.
    """
    spec = _spec(exercise)
    if spec.live is None:
        raise ValueError(f"exercise {exercise} is a fixed fact: the hidden tests grade it")
    if not _kind_ok(spec.kind, answer):
        return False
    try:
        expected = spec.live(lab)
    except (OSError, subprocess.SubprocessError, VpnlabError, ValueError, KeyError, IndexError):
        return False
    if expected is None:
        return False
    if spec.kind is int:
        if not (isinstance(answer, int | float) and isinstance(expected, int | float)):
            raise TypeError(f"exercise {exercise}: {answer!r} - {expected!r}: not numbers")
        return abs(answer - expected) <= spec.tolerance
    return canonical(answer) == canonical(expected)


def check_answer(exercise: str, answer: object, lab: LabView | None = None) -> None:
    """Practice feedback for one exercise, recorded in the student's progress file.

    ``answer`` still ``...`` (Ellipsis): says so (so "Run all" goes on), records nothing.
    A fixed fact: recorded, "graded by your instructor" (no verdict). A live exercise: a tick,
    or AssertionError with the exercise's hint.
    """
    spec = _spec(exercise)
    if answer is Ellipsis:
        print(f"Exercise {exercise}: not answered yet (replace ... with your answer).")
        return
    if not _kind_ok(spec.kind, answer):
        raise AssertionError(
            f"Exercise {exercise}: {answer!r} is not a {spec.kind.__name__}. {spec.hint}"
        )
    if spec.live is None:
        record(Attempt(exercise, False, time.time(), f"answer {answer!r}: {FACT_RECORDED}"))
        print(f"Exercise {exercise}: {answer!r} {FACT_RECORDED}.")
        return
    if lab is None:
        raise ValueError(f"exercise {exercise} is judged in your lab: pass lab=lab")
    ok = judge(exercise, answer, lab)
    verdict = _prediction_verdict(exercise, ok, lab)
    record(Attempt(exercise, ok, time.time(), f"answer {answer!r}{verdict}"))
    if not ok:
        raise AssertionError(
            f"Exercise {exercise}: not what your lab shows ({answer!r}). {spec.hint}"
        )
    print(f"Exercise {exercise}: correct \N{CHECK MARK} ({answer!r}){verdict}")


# --- nbgrader's grade cells ---------------------------------------------------------------------


def grade(exercise: str, answer: object, lab: LabView) -> None:
    """A grade cell of a live exercise: passes if ``answer`` is what the lab of ``lab.prefix``
    shows now (read afresh: :class:`LocalLab`, not the notebook's object).

    nbgrader's autograde runs it in the instructor's fresh lab, against the student's code: a
    literal copied from another lab fails there.
    """
    if answer is Ellipsis or not judge(exercise, answer, LocalLab(lab.prefix)):
        raise AssertionError(f"Exercise {exercise}: not what this lab shows ({answer!r})")
    print(f"Exercise {exercise}: right for this lab")


def grade_facts(facts: dict[str, tuple[object, object]]) -> None:
    """A notebook's fixed facts graded as one set (instructor edition, hidden tests only).

    ``facts``: exercise -> (the student's answer, the key); a key that is a list, tuple, set or
    range holds every accepted answer. Passes only if all are right and says nothing of which
    are wrong: guessing one of them earns nothing.
    """
    right = 0
    for exercise, (answer, key) in facts.items():
        accepted = key if isinstance(key, Collection) and not isinstance(key, str) else [key]
        if answer is not Ellipsis and _kind_ok(_spec(exercise).kind, answer):
            right += any(canonical(answer) == canonical(k) for k in accepted)
    if right != len(facts):
        names = ", ".join(facts)
        raise AssertionError(f"the fixed facts ({names}), graded as a set: not all right")
    print(f"fixed facts {', '.join(facts)}: all right")


# --- predict, then observe, then explain --------------------------------------------------------


def predict(exercise: str, value: object) -> None:
    """Record a prediction for ``exercise`` before the demonstration that answers it runs.

    ``value``: what the exercise's answer will be (an int, str or bool).
    """
    if value is Ellipsis:
        print(f"Prediction {exercise}: none yet (replace ... with what you expect).")
        return
    record(Attempt(f"{exercise}:predict", True, time.time(), json.dumps(value)))
    print(f"Prediction {exercise} recorded: {value!r}. Now run the experiment.")


def _prediction_verdict(exercise: str, ok: bool, lab: LabView) -> str:
    """``; your prediction X was right/wrong``, judged as an answer once the answer is right."""
    guesses = [a for a in load() if a.item == f"{exercise}:predict"]
    if not guesses or not ok:
        return ""
    guess = json.loads(guesses[-1].detail)
    right = judge(exercise, guess, lab)
    return f"; your prediction {guess!r} was {'right' if right else 'wrong'}"


def explain(exercise: str, text: object) -> None:
    """Record a short written explanation (``MIN_EXPLANATION_WORDS`` words at least)."""
    if text is Ellipsis:
        print(f"Explanation {exercise}: not written yet (replace ... with a few sentences).")
        return
    words = len(str(text).split())
    ok = isinstance(text, str) and words >= MIN_EXPLANATION_WORDS
    record(Attempt(f"{exercise}:explain", ok, time.time(), str(text)))
    if not ok:
        raise AssertionError(f"Explanation {exercise}: {words} words; write a few sentences.")
    print(f"Explanation {exercise} recorded ({words} words) for your instructor.")


def observe(exercise: str, facts: dict[str, bool]) -> None:
    """A behavioural check: passes when every fact the lab observed holds (notebook 12: a
    ping, a fetch and a capture through the student's own tunnel), recorded with the facts."""
    missing = [name for name, held in facts.items() if not held]
    record(Attempt(exercise, not missing, time.time(), json.dumps(facts)))
    if missing:
        raise AssertionError(f"Exercise {exercise}: not yet: {'; '.join(missing)}")
    print(f"Exercise {exercise}: correct \N{CHECK MARK} ({', '.join(facts)})")
