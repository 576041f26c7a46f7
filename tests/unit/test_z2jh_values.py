"""deploy/z2jh/values.yaml against the Zero to JupyterHub chart (issue 25, item 6), offline.

helm validates the values a release gets (the chart's defaults with the user's values merged
over them) against the chart's ``values.schema.yaml``: so does this test, with jsonschema and
the chart's two files (tests/data/z2jh/, copied from jupyterhub/zero-to-jupyterhub-k8s). The
schema passes ``extraPodConfig`` and ``hub.config`` through unchecked, so what this project
needs there is checked here by name: a real authenticator (no dummy, no allow_all), fsGroup
kept in the pod's securityContext, the pod in its own user namespace, the student-server
config. No helm and no Kubernetes run here (docs/performance.md says what was not run).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "tests/data/z2jh"
VALUES = REPO / "deploy/z2jh/values.yaml"


def merged(defaults: Any, values: Any) -> Any:
    """helm's coalescing: maps merge key by key, anything else is replaced by the user's."""
    if isinstance(defaults, dict) and isinstance(values, dict):
        out = copy.deepcopy(defaults)
        for key, value in values.items():
            out[key] = merged(defaults.get(key), value) if key in defaults else value
        return out
    return copy.deepcopy(values)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.schema.yaml").read_text())


def test_the_values_merged_over_the_chart_defaults_pass_its_schema(values, schema):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(merged(defaults, values), schema)


def test_the_schema_catches_a_misspelt_key(values, schema):
    """The check has teeth: the chart's schema refuses keys it does not know."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    broken = merged(values, {"singleuser": {"memroy": {"guarantee": "1G"}}})
    with pytest.raises(jsonschema.ValidationError, match="memroy"):
        jsonschema.validate(merged(defaults, broken), schema)


def test_a_real_authenticator_with_placeholders(values):
    config = values["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == "generic-oauth"
    oauth = config["GenericOAuthenticator"]
    for key in ("client_id", "client_secret", "authorize_url", "token_url", "userdata_url"):
        assert "<" in str(oauth[key]), f"{key}: a placeholder for the identity provider's value"
    assert oauth["oauth_callback_url"].startswith("https://")
    assert config["Authenticator"]["allow_all"] is False and oauth["allowed_groups"]


def test_the_pod_keeps_fsgroup_and_its_own_user_namespace(values):
    user = values["singleuser"]
    pod = user["extraPodConfig"]
    assert pod["hostUsers"] is False
    assert pod["securityContext"]["fsGroup"] == user["fsGid"]  # replaced whole by KubeSpawner
    container = values["hub"]["config"]["KubeSpawner"]["extra_container_config"]["securityContext"]
    assert container["capabilities"]["drop"] == ["ALL"] and container["privileged"] is False
    assert container["runAsNonRoot"] is True and container["procMount"] == "Unmasked"
    assert user["cloudMetadata"]["blockWithIptables"] is False  # a privileged init container


def test_the_student_server_config_is_where_the_image_puts_it(values):
    """The values named /opt/vpnlab/deploy/jupyterhub/student-server, a folder the image does
    not have (it copies the config to /opt/vpnlab/jupyterhub/): every extension was on."""
    path = values["singleuser"]["extraEnv"]["JUPYTER_CONFIG_PATH"]
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    copied = re.search(r"^COPY deploy/jupyterhub/student-server (\S+)$", dockerfile, re.M)
    assert copied is not None and path == copied.group(1)
    assert f"JUPYTER_CONFIG_PATH={path}" in dockerfile  # the image's default, the same folder
    assert (REPO / "deploy/jupyterhub/student-server/jupyter_server_config.json").exists()


def test_the_cluster_requirements_are_written_down():
    text = VALUES.read_text()
    for needed in ("Kubernetes >= 1.33", "containerd >= 2.0", "Linux >= 6.3", '"privileged"'):
        assert needed in text
