"""The caption step of the worker: fill missing (or, with ``recaption``, all) captions.

Runs after the annotators on the model thread (the GPU, when there is one) over the same
batch, only for samples that decoded fine and need a caption. Each sample's caption source
goes into the index: ``input``, ``generated:<model id>``, or empty when it has no caption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from annotators.caption import DEFAULT_MAX_TOKENS, Captioner
from pipeline.result import Result

INPUT = "input"
GENERATED = "generated:"


@dataclass(frozen=True)
class CaptionSpec:
    """``--caption MODEL [--recaption] [--caption-max-tokens N]``: plain data for every worker."""

    model: str
    recaption: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = 8

    def config(self) -> dict[str, Any]:
        """What the manifest records and a resumed build must agree on."""
        return {"model": self.model, "recaption": self.recaption, "max_tokens": self.max_tokens}


def has_text(caption: str | None) -> bool:
    """True for a caption with something in it (None, '' and blanks count as missing)."""
    return bool(caption and caption.strip())


def input_source(caption: str | None) -> str:
    """``input`` for a sample that came with a caption, '' otherwise."""
    return INPUT if has_text(caption) else ""


class CaptionStep:
    """Holds one loaded :class:`Captioner` and decides which samples it captions."""

    def __init__(self, spec: CaptionSpec) -> None:
        self.spec = spec
        self.captioner = Captioner(spec.model, max_tokens=spec.max_tokens,
                                   batch_size=spec.batch_size)  # fmt: skip
        self.captioner.load()
        self.source = GENERATED + self.captioner.model_id

    def info(self) -> dict[str, Any]:
        """Model id, task, token limit and file hashes, for the manifest."""
        return {**self.captioner.info(), "recaption": self.spec.recaption}

    def fill(
        self, results: list[Result], captions: list[str | None]
    ) -> list[tuple[str | None, str]]:
        """(caption, caption source) per sample; a sample whose captioning fails fails alone."""
        out = [(c, input_source(c)) for c in captions]
        todo = [i for i, (r, c) in enumerate(zip(results, captions, strict=True))
                if r.status == "ok" and (self.spec.recaption or not has_text(c))]  # fmt: skip
        if not todo:
            return out
        start = time.perf_counter()
        try:
            texts: list[str | None] = self.captioner.caption([results[i].image for i in todo])
        except Exception:  # noqa: BLE001 - retry one by one to isolate the bad sample
            texts = []
            for i in todo:
                try:
                    texts += self.captioner.caption([results[i].image])
                except Exception as err:  # noqa: BLE001
                    results[i].fail("caption", err)
                    texts.append(None)
        elapsed = (time.perf_counter() - start) / len(todo)
        for i, text in zip(todo, texts, strict=True):
            if text is not None:
                results[i].timings["caption"] = elapsed
            if text:  # an empty generated caption keeps what the input had
                out[i] = (text, self.source)
        return out
