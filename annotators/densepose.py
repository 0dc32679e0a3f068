"""``densepose``: DensePose body-part maps as the DensePose ControlNets were trained on them
(ComfyUI's controlnet_aux pack and sd-webui-controlnet's DensePose preprocessor; huggingface's
controlnet_aux has none).

Weights: the published TorchScript export of detectron2's DensePose R-CNN R50-FPN-DL
(``densepose_r50_fpn_dl.torchscript``, LayerNorm/DensePose-TorchScript-with-hint-image, made
with dajes/DensePose-TorchScript; R101 as ``model=r101``). detectron2 itself has no wheel on
PyPI (a source build against the installed torch and CUDA), so the TorchScript file is the
route every DensePose preprocessor uses.

**Loading a TorchScript file runs its provider's code.** ``torch.jit.load`` does not call
Python's pickle on arbitrary objects (its C++ unpickler builds only tensors, containers and
TorchScript objects), but the archive carries a TorchScript program that is compiled and run on
every image, with every registered operator at its disposal, and PyTorch documents that there is
no safe mode for it (SECURITY.md: "treat TorchScript models as locally executable code from
an unknown source"). So the project's rule that loading never unpickles arbitrary objects does
not cover it: this annotator loads a TorchScript file only when its sha256 is one the user
vouched for (``trusted_sha256``, checked before any work, exit 2 otherwise), after comparing it
with the publisher's.

Drawing, as the reference: the image padded (edge pixels) to a multiple of 64, fed as a 3xHxW
uint8 RGB tensor; per detected person (the file's order), the fine segmentation (25 channels)
and the coarse one (2) resized bilinearly to the integer box, part label = argmax(fine) where
argmax(coarse) > 0, coloured by ``cv2.applyColorMap(uint8(label * 255 / 24), cmap)`` over the
box's foreground, later people over earlier ones; ``viridis`` (MagicAnimate's, default): every
0 channel of the RGB map then set to viridis(0) = (68, 1, 84) (the background too); ``parula``
(the CivitAI DensePose ControlNets'): background black.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param
from annotators.extras import TORCH
from annotators.learned import LearnedAnnotator, fp32_params, pad_edge
from annotators.registry import register
from annotators.weights import WeightsError, WeightsFile, identity, resolve, sha256_file

REPO = "LayerNorm/DensePose-TorchScript-with-hint-image"
LICENCE = "CC-BY-SA-3.0 (DensePose model zoo weights; TorchScript export by dajes)"
WEIGHTS = {
    "r50": WeightsFile("densepose_r50_fpn_dl.torchscript", repo_id=REPO, licence=LICENCE),
    "r101": WeightsFile("densepose_r101_fpn_dl.torchscript", repo_id=REPO, licence=LICENCE),
}
PART_LABELS = 24
COLORMAPS = {"viridis": cv2.COLORMAP_VIRIDIS, "parula": cv2.COLORMAP_PARULA}
#: viridis(0) in RGB: what the reference writes into every zero channel of a viridis map
VIRIDIS_ZERO = (68, 1, 84)

# (sha256, device) -> loaded TorchScript module, one per process
_MODULES: dict[tuple[str, str], Any] = {}


def part_labels(box: tuple[int, int, int, int], coarse: Any, fine: Any) -> np.ndarray:
    """(h, w) uint8 part labels 0..24 of one person: fine (1, 25, S, S) and coarse (1, 2, S, S)
    resized bilinearly (align_corners=False) to the box, argmax(fine) where argmax(coarse) > 0."""
    import torch.nn.functional as F

    size = (max(box[3], 1), max(box[2], 1))
    body = F.interpolate(coarse, size, mode="bilinear", align_corners=False).argmax(1) > 0
    parts = F.interpolate(fine, size, mode="bilinear", align_corners=False).argmax(1)
    return (parts * body.long())[0].to("cpu").numpy().astype(np.uint8)


def int_box(xyxy: Any) -> tuple[int, int, int, int]:
    """(x, y, w, h) of an x1, y1, x2, y2 box, each truncated as the reference (``.long()``)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return int(x1), int(y1), int(x2 - x1), int(y2 - y1)


def paint(canvas: np.ndarray, body: np.ndarray, box: tuple[int, int, int, int],
          labels: np.ndarray, cmap: int) -> None:  # fmt: skip
    """Colour one person's labels into the BGR ``canvas`` inside its box (background kept) and
    mark them in the boolean ``body`` mask."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return
    scaled = (labels.astype(np.float32) * np.float32(255.0 / PART_LABELS)).clip(0, 255)
    colours = cv2.applyColorMap(scaled.astype(np.uint8), cmap)
    region = canvas[y : y + h, x : x + w]  # a box past the canvas is clipped to it
    inside = labels[: region.shape[0], : region.shape[1]] > 0
    region[inside] = colours[: region.shape[0], : region.shape[1]][inside]
    body[y : y + h, x : x + w] |= inside


def densepose_map(shape: tuple[int, int], outputs: tuple, cmap: str) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """The RGB map of an image of ``shape`` from the file's outputs (boxes, coarse, fine, u, v),
    the mask of its body pixels and the number of people drawn."""
    boxes, coarse, fine = outputs[0], outputs[1], outputs[2]
    canvas = np.zeros((*shape, 3), np.uint8)  # BGR until the end, as the reference
    body = np.zeros(shape, bool)
    for k in range(len(boxes)):
        box = int_box(boxes[k])
        labels = part_labels(box, coarse[k : k + 1], fine[k : k + 1])
        paint(canvas, body, box, labels, COLORMAPS[cmap])
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    if cmap == "viridis":
        for channel, value in enumerate(VIRIDIS_ZERO):
            rgb[:, :, channel][rgb[:, :, channel] == 0] = value
    return rgb, body, len(boxes)


def load_torchscript(spec: WeightsFile, weights_dir: str, device: str, trusted: str) -> tuple[Any, dict]:  # fmt: skip
    """The TorchScript module of ``spec`` on ``device`` (cached per process) and its identity;
    WeightsError (one line) when the file is missing or its sha256 is not ``trusted``."""
    path = trusted_path(spec, weights_dir, trusted)
    key = (sha256_file(path), device)
    if key not in _MODULES:
        import warnings

        import torch
        import torchvision  # noqa: F401 - registers torchvision::nms / roi_align the graph calls

        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated" (torch >= 2.11)
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=device)
            _MODULES[key] = module.eval()
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: one line
            message = " ".join(str(err).split())[:200]
            raise WeightsError(f"cannot load {spec.filename}: {message}") from None
    return _MODULES[key], identity(spec, path)


def trusted_path(spec: WeightsFile, weights_dir: str, trusted: str) -> Any:
    """The file of ``spec`` if its sha256 is ``trusted`` (or the pinned published one); else
    WeightsError naming the file and its sha256 (TorchScript is code: never run unvetted)."""
    path = resolve(spec, weights_dir or None)
    digest = sha256_file(path)
    allowed = {h.lower() for h in (spec.sha256, trusted) if h}
    if digest not in allowed:
        raise WeightsError(
            f"{spec.filename} at {path} is TorchScript (code torch.jit.load runs, not plain "
            f"weights) with sha256 {digest}; compare it with {spec.url} and pass "
            f"-p densepose.trusted_sha256={digest} to run it"
        )
    return path


@register
class DensePose(LearnedAnnotator):
    """DensePose part maps (24 parts, viridis or parula) on a viridis(0) or black background."""

    name = "densepose"
    version = "1"
    outputs = ("densepose",)
    stats = ("densepose_people", "densepose_coverage")
    description = "DensePose body-part map (R50-FPN-DL TorchScript), viridis or parula colours"
    reference = (
        "ComfyUI controlnet_aux pack DensePosePreprocessor (densepose_r50_fpn_dl.torchscript, "
        "cmap viridis / parula)"
    )
    params = (
        Param("model", "r50", "R-CNN backbone of the published file", choices=tuple(WEIGHTS)),
        Param(
            "cmap",
            "viridis",
            "viridis (MagicAnimate, default) or parula (CivitAI DensePose ControlNets)",
            choices=tuple(COLORMAPS),
        ),  # fmt: skip
        Param("trusted_sha256", "", "sha256 of the TorchScript file you vetted (it is code)"),
        *fp32_params(),
    )

    @classmethod
    def weights_files(cls) -> list[Any]:
        return list(WEIGHTS.values())

    def configured_weights(self) -> list[Any]:
        return [WEIGHTS[self.config["model"]]]

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """torch, and torchvision (its nms / roi_align operators), both in ``models``."""
        return (*TORCH, ("torchvision", "models"))

    def find_weights(self) -> None:
        """The file, and its sha256 one the user trusts (before any work: exit 2 otherwise)."""
        cfg = self.config
        trusted_path(WEIGHTS[cfg["model"]], cfg["weights_dir"], cfg["trusted_sha256"])

    def _load_networks(self) -> list[dict[str, Any]]:
        cfg = self.config
        self._module, loaded = load_torchscript(
            WEIGHTS[cfg["model"]], cfg["weights_dir"], self.device, cfg["trusted_sha256"]
        )
        return [loaded]

    def _annotate_batch(self, images: list[np.ndarray], rngs: list) -> list[Annotation]:
        """One image per call (the published file takes one image)."""
        import torch

        self.load()
        results = []
        for rgb in images:
            padded = pad_edge(rgb)
            tensor = torch.from_numpy(padded).to(self.device).permute(2, 0, 1)
            with torch.inference_mode():
                outputs = self._module(tensor)
            drawn, body, people = densepose_map(padded.shape[:2], outputs, self.config["cmap"])
            height, width = rgb.shape[:2]
            covered = float(body[:height, :width].mean())
            results.append(Annotation(
                maps={"densepose": np.ascontiguousarray(drawn[:height, :width])},
                stats={"densepose_people": float(people), "densepose_coverage": covered},
            ))  # fmt: skip
        return results
