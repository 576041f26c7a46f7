"""The code exercises' verdicts: facts the lab observed, shown to the student, required by the
hidden tests.

A code exercise (notebooks 3, 4, 5, 6, 12) runs the student's function against the live lab
and returns ``{fact: held}``. The student's cell shows them (:func:`show`); the hidden test that
``nbgrader autograde`` runs on the instructor's side runs the check again and requires every
fact (:func:`require`), so an edited visible cell changes nothing.
"""

from __future__ import annotations


def show(facts: dict[str, bool]) -> None:
    """One line per fact: a check mark or a cross."""
    for fact, held in facts.items():
        print(("\N{CHECK MARK} " if held else "\N{BALLOT X} ") + fact)


def require(facts: dict[str, bool]) -> None:
    """The hidden test: every fact must hold.

    Raises:
        AssertionError: naming the facts that did not.
    """
    missing = [fact for fact, held in facts.items() if not held]
    assert not missing, "not observed: " + "; ".join(missing)
