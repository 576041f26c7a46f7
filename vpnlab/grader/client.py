"""The student's side of the grader: one request, identified by the student's hub token.

In a single-user server of the hub, ``JUPYTERHUB_API_TOKEN`` is the student's own token; the
service asks the hub whose it is (``service.py``). ``VPNLAB_GRADER_URL`` is where the service
listens (the hub config sets it for every single-user server).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from vpnlab.core.errors import LabError

DEFAULT_URL = "http://127.0.0.1:10101/services/vpnlab-grader/"
TIMEOUT_S = 180.0


def ask(verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``POST`` (or, for ``attempts``, ``GET``) ``verb`` to the grader; its JSON answer.

    Raises LabError (one line) without a hub token, for the grader's refusal, or for an answer
    that is no JSON object (a proxy's or the hub's page in its place).
    """
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        raise LabError("no JUPYTERHUB_API_TOKEN: the grader is asked from a hub server only")
    url = (os.environ.get("VPNLAB_GRADER_URL") or DEFAULT_URL).rstrip("/") + "/" + verb
    data = None if verb == "attempts" else json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            answer = _json_object(reply.read())
    except urllib.error.HTTPError as exc:
        refusal = _json_object(exc.read()) or {}
        raise LabError(f"the grader says: {refusal.get('error', exc.reason)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"the grader at {url} cannot be reached: {exc}") from None
    if answer is None:
        raise LabError(f"the grader at {url} answered with no JSON object")
    return answer


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object ``body`` holds, or None (not JSON, or JSON but no object)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
