"""Values drawn for each lab at ``lab up``, so that an answer copied from another lab fails.

The course's live exercises (``vpnlab/course/exercises.py``) compare a student's answer with
what this lab shows, and some of what it shows is drawn here: a value from another student's
lab, an earlier run or the notes is wrong in this one. The values are kept in the lab's record
(``lab.json``, key ``drawn``; read back with :func:`vpnlab.lab.state.drawn_values`) and the lab
uses them (who-am-I serves the token at ``/token``).

    whoami_token   16 hex digits, served by the web node's who-am-I at ``GET /token``
"""

from __future__ import annotations

import secrets

WHOAMI_TOKEN = "whoami_token"


def draw() -> dict[str, object]:
    """Fresh values for one lab (``secrets``: unpredictable from any earlier lab)."""
    return {WHOAMI_TOKEN: secrets.token_hex(8)}
