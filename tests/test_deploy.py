"""The Dockerfile installs exactly pyproject's runtime extras; deploy manifests parse and run build."""

from __future__ import annotations

import re

import tomllib
import yaml

from tests.conftest import ROOT


def runtime_extras() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return set(extras) - {"all", "dev"}


def test_dockerfile_installs_every_runtime_extra():
    text = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r'pip install [^\n]*"\.\[([a-z,]+)\]"', text)
    assert len(installs) == 1, "one pip install of the project"
    assert set(installs[0].split(",")) == runtime_extras()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert {"annotators", "pipeline", "training", "evaluation"} <= set(packages)
    for package in packages:  # every package pyproject installs is in the image
        assert f"COPY --chown=ray:users {package} ./{package}" in text
    assert re.search(r"ARG RAY_IMAGE=rayproject/ray:[\d.]+-py3\d+", text)


def test_deploy_yaml_parses_and_runs_build_on_the_cluster():
    cluster = yaml.safe_load((ROOT / "deploy" / "cluster.yaml").read_text())
    assert cluster["head_node_type"] in cluster["available_node_types"]
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("hintset build") and "--address auto" in entry and "s3://" in entry
    assert "hintset build" in (ROOT / "deploy" / "cluster.yaml").read_text()
