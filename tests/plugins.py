"""Test-only annotators for fault tests, imported on Ray workers with ``--import tests.plugins``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from annotators import Annotation, Annotator, Param, register


@register
class RaisesOnBright(Annotator):
    """Raises for images brighter than ``threshold`` on average; else a flat map."""

    name = "test_raises"
    outputs = ("flat",)
    params = (Param("threshold", 150.0, "mean brightness above which it raises"),)

    def _annotate(self, rgb, rng):
        if rgb.mean() > self.config["threshold"]:
            raise RuntimeError(f"refusing a bright image (mean {rgb.mean():.0f})")
        return Annotation(maps={"flat": np.zeros(rgb.shape[:2], np.uint8)})


@register
class ExitsOnce(Annotator):
    """Kills its worker process (os._exit) the first time it runs, marked by a file."""

    name = "test_exits"
    outputs = ("flat",)
    params = (Param("marker", "", "file created before exiting; present = behave"),)

    def _annotate(self, rgb, rng):
        marker = Path(self.config["marker"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(13)
        return Annotation(maps={"flat": np.zeros(rgb.shape[:2], np.uint8)})


@register
class Slow(Annotator):
    """Sleeps per image, so builds last long enough to disturb them mid-way."""

    name = "test_slow"
    outputs = ("flat",)
    params = (Param("seconds", 0.2, "sleep per image"),)

    def _annotate(self, rgb, rng):
        time.sleep(self.config["seconds"])
        return Annotation(maps={"flat": np.zeros(rgb.shape[:2], np.uint8)})


@register
class StallsOnBright(Annotator):
    """Sleeps ``seconds`` for images brighter than ``threshold`` on average (a stalled model)."""

    name = "test_stall"
    outputs = ("flat",)
    params = (Param("threshold", 150.0, "mean brightness above which it stalls"),
              Param("seconds", 30.0, "how long it stalls"))  # fmt: skip

    def _annotate(self, rgb, rng):
        if rgb.mean() > self.config["threshold"]:
            time.sleep(self.config["seconds"])
        return Annotation(maps={"flat": np.zeros(rgb.shape[:2], np.uint8)})


@register
class StandInModel(Annotator):
    """A stand-in for a GPU network: sleeps ``ms`` per image per batch (the GIL is free, as
    while a GPU computes) and returns the green channel, so PNG encoding costs what a real map does.
    """

    name = "test_model"
    outputs = ("grey",)
    params = (
        Param("ms", 10.0, "milliseconds of 'model time' per image"),
        Param("device", "cpu", "where it claims to compute (cuda: the worker overlaps CPU work)"),
    )

    @property
    def device(self) -> str:
        """What learned annotators report after loading; the worker reads it (Worker.on_gpu)."""
        return self.config["device"]

    def _annotate_batch(self, images, rngs):
        time.sleep(self.config["ms"] * len(images) / 1000)
        return [Annotation(maps={"grey": np.ascontiguousarray(img[:, :, 1])}) for img in images]
