"""Each notebook owns its lab (its own prefix), and a class hub limits the labs a student has up.

The labs themselves, in both orders, are tested on a real hub (tests/lab/test_jupyterhub.py).
"""

from __future__ import annotations

import pytest

from vpnlab.core.errors import LabError
from vpnlab.course.notebook import CourseLab, prefix
from vpnlab.lab.rootless import MAX_LABS_ENV, check_lab_limit
from vpnlab.lab.state import check_prefix


@pytest.mark.parametrize(
    ("notebook", "expected"),
    [
        ("00_setup_topology", "nb00-"),
        ("14_ipv6", "nb14-"),
        ("hub", "nbhub-"),
        ("My Notebook!", "nbmynotebook-"),
        ("", "nb-"),
    ],
)
def test_a_notebook_has_a_prefix_of_its_own(monkeypatch, notebook, expected):
    monkeypatch.delenv("VPNLAB_PREFIX", raising=False)
    assert prefix(notebook) == expected == check_prefix(expected)
    assert CourseLab(notebook).prefix == expected


def test_vpnlab_prefix_names_every_notebooks_lab(monkeypatch):
    monkeypatch.setenv("VPNLAB_PREFIX", "t1-")
    assert CourseLab("00_setup_topology").prefix == CourseLab("01_tun_device").prefix == "t1-"


def test_the_labs_limit_refuses_in_one_line(monkeypatch):
    monkeypatch.setenv(MAX_LABS_ENV, "2")
    check_lab_limit("nb02-", ["nb00-"])  # one up: a second may come
    check_lab_limit("nb00-", ["nb01-"])  # the same prefix again replaces its own lab
    with pytest.raises(LabError) as refused:
        check_lab_limit("nb02-", ["nb01-", "nb00-"])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("2 labs up already (nb00-, nb01-)")
    assert "the most you may have at once is 2" in message
    assert "vpnlab lab down --prefix nb00-" in message


def test_no_limit_without_the_setting(monkeypatch):
    monkeypatch.delenv(MAX_LABS_ENV, raising=False)
    check_lab_limit("nb09-", [f"nb0{i}-" for i in range(9)])
