"""The per-sample work shared by ``hintset annotate`` and ``hintset build``.

decode -> resize -> annotate (every annotator) -> encode. A :class:`Worker`
creates its annotators once and reuses them; one bad sample becomes a failed
:class:`Result` with a one-line error, never an exception that stops a job.
The three steps are separate methods (:meth:`Worker.prepare`, :meth:`Worker.run_models`,
:meth:`Worker.encode`) so :mod:`pipeline.stages` can run them on different threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from annotators import create
from annotators.base import Annotation, Annotator
from pipeline.budget import exceeded, time_limit
from pipeline.caption import CaptionSpec, CaptionStep
from pipeline.decode import MAX_PIXELS, decode, resize_short_side
from pipeline.encode import encode_json, encode_png
from pipeline.filters import Rule, rejection
from pipeline.result import Result


@dataclass(frozen=True)
class AnnotatorSpec:
    """An annotator name and its parameters: plain data that crosses process boundaries."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_specs(
    names: str | list[str], param_args: list[str] | tuple[str, ...] = ()
) -> list[AnnotatorSpec]:
    """Turn ``"canny,lines"`` and ``["canny.low=50"]`` into specs (values coerced by each Param)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("no annotators given")
    params: dict[str, dict[str, str]] = {name: {} for name in names}
    for arg in param_args:
        target, sep, value = arg.partition("=")
        annotator, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ValueError(
                f"bad --param {arg!r}: expected ANNOTATOR.NAME=VALUE (e.g. canny.low=50)"
            )
        if annotator not in params:
            raise ValueError(f"--param {arg!r} names {annotator!r}, which is not in --annotators")
        params[annotator][key] = value
    specs = [AnnotatorSpec(name, params[name]) for name in names]
    for spec in specs:  # validate names and values early, in the parent process
        create(spec.name, **spec.params)
    return specs


def encode_annotation(annotation: Annotation) -> dict[str, bytes]:
    """Encoded files for one annotation: maps as PNG, side data as JSON."""
    files = {f"{suffix}.png": encode_png(arr) for suffix, arr in annotation.maps.items()}
    files.update({f"{suffix}.json": encode_json(obj) for suffix, obj in annotation.data.items()})
    return files


class Worker:
    """Holds annotators (created and loaded once) and processes samples with them."""

    def __init__(
        self,
        specs: list[AnnotatorSpec],
        resolution: int = 512,
        max_pixels: int = MAX_PIXELS,
        min_size: int = 0,
        filters: tuple[Rule, ...] | list[Rule] = (),
        caption: CaptionSpec | None = None,
        sample_timeout: float = 0.0,
    ) -> None:
        self.specs = specs
        self.sample_timeout = sample_timeout  # seconds of annotators per sample (0: no limit)
        self.resolution = resolution
        self.max_pixels = max_pixels
        self.min_size = min_size
        self.filters = tuple(filters)  # resolved rules (pipeline.filters.parse_filters)
        self.annotators: list[Annotator] = [create(s.name, **s.params) for s in specs]
        for annotator in self.annotators:
            annotator.load()
        self.captions = CaptionStep(caption) if caption else None  # --caption: loaded once

    @property
    def on_gpu(self) -> bool:
        """True when an annotator or the captioner computes on CUDA (the model thread mostly waits)."""
        models = [*self.annotators, *([self.captions.captioner] if self.captions else [])]
        return any(str(getattr(m, "device", "cpu")).startswith("cuda") for m in models)

    def output_suffixes(self) -> list[str]:
        """File suffixes every successful sample gets (``canny.png``, ``pose.json``, ...)."""
        return [
            f"{suffix}.{ext}"
            for a in self.annotators
            for suffixes, ext in ((a.outputs, "png"), (a.data_outputs, "json"))
            for suffix in suffixes
        ]

    def prepare(self, key: str, data: bytes) -> Result:
        """Decode, filter (``min_size``) and resize one sample; any failure fails only this sample."""
        result = Result(key=key)
        start = time.perf_counter()
        # reduced JPEG decoding stays >= both sizes; none when the original size is kept (0)
        draft = max(self.resolution, self.min_size) if self.resolution > 0 else 0
        try:
            rgb, result.original_size = decode(
                data, max_pixels=self.max_pixels, draft_short_side=draft
            )
        except Exception as err:  # noqa: BLE001 - never let one input stop the job
            return result.fail("decode", err)
        width, height = result.original_size  # the true size, not the reduced decode
        if min(width, height) < self.min_size:
            return result.filter(
                f"filtered: {width}x{height} is smaller than --min-size {self.min_size}"
            )
        try:
            result.image = resize_short_side(rgb, self.resolution, max_pixels=self.max_pixels)
        except Exception as err:  # noqa: BLE001
            return result.fail("resize", err)
        result.size = (result.image.shape[1], result.image.shape[0])
        result.upscaled = min(result.size) > min(width, height)
        result.timings["decode"] = time.perf_counter() - start
        return result

    def run_models(self, results: list[Result]) -> list[Result]:
        """Run every annotator over the decoded results as one batch; encoding comes later.

        A sample whose annotators run past ``sample_timeout`` fails alone (see
        :mod:`pipeline.budget`): a batch gets the sum of its samples' budgets, and when it
        runs out its samples are retried one by one, each within what is left of its own.
        """
        budget = self.sample_timeout
        for annotator in self.annotators:
            live = [r for r in results if r.status == "ok"]
            if not live:
                break
            start = time.perf_counter()
            try:
                with time_limit(sum(self._left(r) for r in live), budget):
                    annotations = annotator.annotate_batch(
                        [r.image for r in live], keys=[r.key for r in live]
                    )
                elapsed = [(time.perf_counter() - start) / len(live)] * len(live)
            except Exception:  # noqa: BLE001 - retry one by one to isolate the bad sample
                annotations, elapsed = [], []
                for r in live:
                    start = time.perf_counter()
                    try:
                        with time_limit(self._left(r), budget):
                            annotations.append(annotator.annotate(r.image, key=r.key))
                    except Exception as err:  # noqa: BLE001
                        r.fail(f"annotator {annotator.name}", err)
                        annotations.append(None)
                    elapsed.append(time.perf_counter() - start)
            for r, annotation, seconds in zip(live, annotations, elapsed, strict=True):
                if annotation is not None:
                    r.timings[annotator.name] = seconds
                    r.annotations.append(annotation)
                    if budget and self._left(r) <= 0:  # ran over where it could not be stopped
                        r.fail(f"annotator {annotator.name}", exceeded(budget))
                    elif reason := rejection(self.filters, annotator.name, annotation.stats):
                        self._reject(r, reason)  # later annotators skip it
        return results

    def _left(self, result: Result) -> float:
        """Seconds of its budget a sample has left after its annotators so far (a sample still
        running has some left: it failed otherwise); 0 when there is no budget (no limit)."""
        if not self.sample_timeout:
            return 0.0
        return self.sample_timeout - sum(result.timings.get(a.name, 0.0) for a in self.annotators)

    @staticmethod
    def _reject(result: Result, reason: str) -> None:
        """Filter a sample a rule rejects; its stats so far stay for the index, nothing is encoded."""
        for annotation in result.annotations:
            result.stats.update(annotation.stats)
        result.annotations.clear()
        result.filter(reason)

    def encode(self, result: Result) -> Result:
        """Encode the maps (PNG) and side data (JSON) of one annotated result."""
        if result.status != "ok":
            return result
        start = time.perf_counter()
        for annotator, annotation in zip(self.annotators, result.annotations, strict=True):
            try:
                result.files.update(encode_annotation(annotation))
            except Exception as err:  # noqa: BLE001
                return result.fail(f"encode {annotator.name}", err)
            result.stats.update(annotation.stats)
        result.annotations.clear()
        result.timings["encode"] = time.perf_counter() - start
        return result

    def annotate(self, results: list[Result]) -> list[Result]:
        """Run every annotator over the successfully decoded results, batched, then encode."""
        return [self.encode(r) for r in self.run_models(results)]

    def process(self, key: str, data: bytes) -> Result:
        """Decode, resize, annotate and encode one sample."""
        return self.annotate([self.prepare(key, data)])[0]

    def process_batch(self, items: list[tuple[str, bytes]]) -> list[Result]:
        """The same for several samples; learned annotators see them as one batch."""
        return self.annotate([self.prepare(key, data) for key, data in items])
