"""Shared fixtures: the real photos, a CLI runner, and a bad-input corpus made on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("HINTSET_PHOTOS", ROOT / "tests" / "data" / "photos"))


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """The 20 real COCO photos in tests/data/photos (or ``$HINTSET_PHOTOS``)."""
    if not any(PHOTOS.glob("*.jpg")):
        pytest.fail(f"real test photos not found in {PHOTOS} (set HINTSET_PHOTOS)")
    return PHOTOS


@pytest.fixture(scope="session")
def photo_paths(photos_dir: Path) -> list[Path]:
    return sorted(photos_dir.glob("*.jpg"))


@pytest.fixture
def offline_weights(monkeypatch, tmp_path):
    """Never touch the network or the user's weights; an empty Hugging Face cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    monkeypatch.delenv("HINTSET_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture(scope="session")
def photos(photo_paths) -> list:
    """Two real photos at small sizes with odd widths (padding must be cropped back exactly)."""
    from pipeline.decode import load_image, resize_short_side

    first = resize_short_side(load_image(photo_paths[2]), 72)
    second = resize_short_side(load_image(photo_paths[5]), 80)
    return [first[:, :101].copy(), second[:77, :].copy()]


def run_cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``hintset ARGS`` in a fresh interpreter (as a user would) and capture its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(kwargs.pop("env", {}))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hintset {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    """``cli("annotate", ...)`` runs the hintset command line in a subprocess."""
    return run_cli


BLOCKER = """import os, sys
BLOCKED = set(filter(None, os.environ.get("HINTSET_TEST_BLOCK", "").split(",")))
class Blocker:  # what a package that is not installed looks like to import
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


@pytest.fixture(scope="module")
def without(tmp_path_factory):
    """``without("torch", "mediapipe")``: env for run_cli in which those imports fail."""
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)

    def env(*modules: str) -> dict[str, str]:
        path = os.pathsep.join([str(ROOT), str(folder), os.environ.get("PYTHONPATH", "")])
        return {"PYTHONPATH": path, "HINTSET_TEST_BLOCK": ",".join(modules)}

    return env
