"""The Dockerfile installs exactly pyproject's runtime extras; deploy manifests parse and run build."""

from __future__ import annotations

import re

import tomllib
import yaml

from tests.conftest import ROOT


def runtime_extras() -> set[str]:
    """The extras ``all`` names (the default stack; ``pose-bundled`` is an environment of its own)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (names,) = re.fullmatch(r"hintset\[([a-z,]+)\]", extras["all"][0]).groups()
    assert set(extras) - set(names.split(",")) == {"all", "dev", "pose-bundled"}
    return set(names.split(","))


def test_dockerfile_installs_every_runtime_extra():
    text = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r'pip install [^\n]*"\.\[([a-z,]+)\]"', text)
    assert len(installs) == 1, "one pip install of the project"
    assert re.search(r'pip install [^\n]*"\.\[[a-z,]+\]" && pip check', text)
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


def entry_paths(command: str) -> list[str]:
    """The paths and URLs a ``hintset build`` command line names (inputs, --captions, -o)."""
    words = command.replace("\\\n", " ").replace('"', " ").split()
    return [w for w in words if w.startswith("/") or "://" in w]


def mounted(pod: dict, path: str) -> bool:
    """True when ``path`` lies under a volume mount of every container of ``pod``."""
    volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
    return all(
        any(path.startswith(m["mountPath"].rstrip("/") + "/") and m["name"] in volumes
            for m in c.get("volumeMounts", []))
        for c in pod["spec"]["containers"]
    )  # fmt: skip


def test_rayjob_runs_as_written_paths_and_auth_consistent():
    """The entrypoint runs on the head pod and workers read on theirs: every local path it
    names is mounted in every pod (or it uses object storage only), and every pod sets the
    same RAY_AUTH_MODE (Ray 2.60: a node without the head's auth mode cannot join)."""
    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    paths = entry_paths(job["spec"]["entrypoint"])
    assert any(p.startswith("s3://") for p in paths)
    for path in paths:
        if path.startswith("/"):
            assert all(mounted(pod, path) for pod in pods), f"{path} is not mounted on every pod"
    modes = set()
    for pod in pods:
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            modes.add(env.get("RAY_AUTH_MODE"))
    assert len(modes) == 1 and modes != {None}, modes


def test_cluster_launcher_nodes_share_auth_mode_and_token():
    """Head and workers start with the same RAY_AUTH_MODE; token mode ships the token file to
    every node; the example command reads nothing local to one node."""
    text = (ROOT / "deploy" / "cluster.yaml").read_text()
    cluster = yaml.safe_load(text)
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
              if "ray start" in c]  # fmt: skip
    modes = {re.search(r"RAY_AUTH_MODE=(\w+)", c)[1] if "RAY_AUTH_MODE" in c else None
             for c in starts}  # fmt: skip
    assert len(modes) == 1 and modes != {None}, modes
    if modes == {"token"}:
        assert "~/.ray/auth_token" in cluster.get("file_mounts", {})
    command = text[text.index('"hintset build') : text.index('--address auto"')]
    command = command.replace("#", " ")
    assert all("://" in p for p in entry_paths(command)), entry_paths(command)
