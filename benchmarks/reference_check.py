"""Fidelity check: hintset's maps against controlnet_aux 0.0.10 (lllyasviel's annotators, packaged)
with the same random weights in the published layout and the same photos.

controlnet_aux lives in its own venv that sees the main venv's packages (torch, timm, cv2, ...)
through a .pth file, so the main venv is not changed:

    python -m venv /tmp/refvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/refvenv/lib/python3.11/site-packages/main-venv.pth
    /tmp/refvenv/bin/pip install --no-deps controlnet_aux==0.0.10 einops easy-dwpose==1.0.2
    /tmp/refvenv/bin/python benchmarks/reference_check.py --photos 3

The ``dwpose`` row: controlnet_aux 0.0.10's DWposeDetector (its resizing, 133 -> OpenPose
mapping and drawing) runs its networks through mmdet/mmpose, which cannot be installed here, so
its ``pose_estimation`` is the ONNX pipeline of the DWPose authors' ControlNet 1.1 annotator
(packaged as easy-dwpose) on the same ONNX files, with the pose network fed RGB as
controlnet_aux's mmpose config does (``bgr_to_rgb=True``). The detector reports a person and the
pose network's output depends on the crop (``tests.weights.write_dwpose``; ``DWPOSE_BOXES``).

Photos are resized to short side 512 and cropped so both sides are multiples of 64: the
references round the working size to multiples of 64 (``resize_image``), which shifts geometry
by design (hintset pads and crops back), so only such images compare pixel for pixel. Both run
at detect and image resolution 512. Prints one row per map: images identical, max abs
difference, mean % of pixels differing by more than 1 grey level; then the annotators of issue 25
that 0.0.10 has no reference for (``NO_REFERENCE``) and what checks them instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotators import create  # noqa: E402
from annotators.openpose import hand_boxes  # noqa: E402
from annotators.pose_draw import draw_people  # noqa: E402
from annotators.shuffle import content_shuffle  # noqa: E402
from benchmarks.common import PHOTOS  # noqa: E402
from pipeline.decode import load_image, resize_short_side  # noqa: E402
from pipeline.sources import IMAGE_EXTENSIONS  # noqa: E402
from tests.weights import (  # noqa: E402
    write_bae,
    write_depth,
    write_dwpose,
    write_hed,
    write_lineart,
    write_lineart_anime,
    write_mlsd,
    write_openpose,
    write_pidinet,
    write_teed,
)

SIZE = 512
#: the detector's people (letterbox pixels, score): two overlapping, one suppressed by NMS,
#: one below the 0.3 person threshold
DWPOSE_BOXES = [(200.0, 40.0, 440.0, 440.0, 0.9), (100.0, 100.0, 300.0, 500.0, 0.8),
                (205.0, 45.0, 445.0, 445.0, 0.7), (500.0, 50.0, 600.0, 150.0, 0.25)]  # fmt: skip
#: photos (sorted) in which MediaPipe's face mesh finds a face: the ``face`` row uses these
FACE_PHOTOS = (3, 8, 10, 11)
#: (annotator, backend) of issue 25 with no row here, and why: controlnet_aux 0.0.10 (its last
#: PyPI release) has no detector for them; what their maps are checked against instead
NO_REFERENCE = {
    ("densepose", ""): "only in ComfyUI's controlnet_aux pack (DensePosePreprocessor; GitHub, "
    "not PyPI); tests/test_densepose.py checks its colouring",
    ("animal_pose", ""): "only in ComfyUI's pack (AnimalPosePreprocessor); 0.0.10's dwpose has "
    "no AP-10K model; tests/test_animal_pose.py checks decoding and drawing pixel by pixel",
    ("normal", "dsine"): "only in ComfyUI's pack; the authors' test_minimal.py is the reference "
    "(checked once against baegwangbin/DSINE, docs/learned-edges-lines-normals.md)",
    ("normal", "marigold"): "diffusers' MarigoldNormalsPipeline is the reference and hintset "
    "runs it (tests/test_backends.py)",
    ("depth", "marigold-depth-v1-1"): "diffusers' MarigoldDepthPipeline is the reference and "
    "hintset runs it (tests/test_backends.py)",
    ("depth", "depth-anything-v1-large"): "no Depth Anything in 0.0.10; transformers' port is "
    "the published one (tests/test_more_models.py)",
    ("seg", "oneformer-coco-swin-large"): "ControlNet 1.1's seg_ofcoco runs detectron2's "
    "OneFormer, not in 0.0.10; transformers' OneFormer here (tests/test_backends.py)",
    ("sam", "sam-vit-huge"): "0.0.10's SamDetector loads segment_anything's .pth layout and "
    "colours masks at random, so no map compares pixel for pixel",
}


def image_paths(folder: Path) -> list[Path]:
    """Every image in ``folder`` the pipeline reads (jpg, png, webp, ...: any case), sorted."""
    return sorted(
        p for p in Path(folder).iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )  # fmt: skip


def photos(count: int, indices: tuple[int, ...] = (), folder: Path = PHOTOS) -> list[np.ndarray]:
    """``count`` images of ``folder`` (or those at ``indices``) at short side 512, long side
    cropped (centred) to a multiple of 64."""
    out = []
    paths = image_paths(folder)
    for path in [paths[i] for i in indices] if indices else paths[:count]:
        img = resize_short_side(load_image(path), SIZE)
        h, w = (s // 64 * 64 for s in img.shape[:2])
        top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out.append(np.ascontiguousarray(img[top : top + h, left : left + w]))
    return out


def first_channel(ref: np.ndarray) -> np.ndarray:
    """controlnet_aux returns 1-channel maps as HxWx3 (HWC3); keep one channel."""
    return ref[:, :, 0] if ref.ndim == 3 else ref


def compare(ours: np.ndarray, ref: np.ndarray) -> tuple[bool, int, float]:
    """(identical, max abs difference, % of values differing by more than 1)."""
    if ours.shape != ref.shape:
        raise SystemExit(f"shape mismatch: ours {ours.shape}, reference {ref.shape}")
    diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
    return bool(not diff.any()), int(diff.max()), float(np.mean(diff > 1) * 100)


def reference_hand_map(ref_hand: Any, image: np.ndarray, box: tuple) -> np.ndarray:
    """controlnet_aux's hand keypoints on one box, normalised and drawn as its detector does."""
    from controlnet_aux.open_pose import Keypoint
    from controlnet_aux.open_pose import util as aux_util

    _, x, y, w = box
    height, width = image.shape[:2]
    bgr = image[:, :, ::-1].copy()
    peaks = ref_hand(bgr[y : y + w, x : x + w, :]).astype(np.float32)
    peaks[:, 0] = np.where(peaks[:, 0] < 1e-6, -1, peaks[:, 0] + x) / float(width)
    peaks[:, 1] = np.where(peaks[:, 1] < 1e-6, -1, peaks[:, 1] + y) / float(height)
    canvas = np.zeros((height, width, 3), np.uint8)
    return aux_util.draw_handpose(canvas, [Keypoint(x=p[0], y=p[1]) for p in peaks])


def midas_state(hf_state: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """transformers' Intel/dpt-hybrid-midas keys -> MiDaS' dpt_hybrid-midas-501f0c75.pt keys.

    Keys MiDaS has but never uses in its depth forward (the ImageNet head, the final ViT norm)
    keep ``template``'s values.
    """
    import torch

    out = dict(template)
    bit = "dpt.embeddings.backbone.bit."
    for key, value in hf_state.items():
        new = None
        if key.startswith(bit + "embedder."):
            new = "pretrained.model.patch_embed.backbone.stem." + key[len(bit + "embedder.") :]
            new = new.replace("stem.convolution", "stem.conv")
        elif key.startswith(bit + "encoder.stages."):
            rest = key[len(bit + "encoder.stages.") :].replace(".layers.", ".blocks.")
            new = "pretrained.model.patch_embed.backbone.stages." + rest
        elif key.startswith("dpt.embeddings."):
            name = key[len("dpt.embeddings.") :]
            new = {"cls_token": "pretrained.model.cls_token",
                   "position_embeddings": "pretrained.model.pos_embed"}.get(name)  # fmt: skip
            if name.startswith("projection."):
                new = "pretrained.model.patch_embed.proj." + name.split(".")[-1]
        elif key.startswith("dpt.encoder.layer."):
            index, rest = key[len("dpt.encoder.layer.") :].split(".", 1)
            block = f"pretrained.model.blocks.{index}."
            if rest.startswith("attention.attention."):
                if ".query." in rest:  # q, k, v are one qkv matrix in timm
                    kind = rest.split(".")[-1]
                    parts = [
                        hf_state[key.replace(".query.", f".{n}.")]
                        for n in ("query", "key", "value")
                    ]
                    out[block + f"attn.qkv.{kind}"] = torch.cat(parts, 0)
                continue
            names = {"attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1",
                     "output.dense": "mlp.fc2", "layernorm_before": "norm1",
                     "layernorm_after": "norm2"}  # fmt: skip
            stem, kind = rest.rsplit(".", 1)
            new = block + f"{names[stem]}.{kind}"
        elif key.startswith("neck.reassemble_stage."):
            rest = key[len("neck.reassemble_stage.") :]
            stage, leaf = int(rest.split(".")[1]), rest.split(".")[-1]
            if rest.startswith("readout_projects."):
                new = f"pretrained.act_postprocess{stage + 1}.0.project.0.{leaf}"
            elif ".projection." in rest:
                new = f"pretrained.act_postprocess{stage + 1}.3.{leaf}"
            elif ".resize." in rest:
                new = f"pretrained.act_postprocess{stage + 1}.4.{leaf}"
        elif key.startswith("neck.convs."):
            new = f"scratch.layer{int(key.split('.')[2]) + 1}_rn.weight"
        elif key.startswith("neck.fusion_stage.layers."):
            index, rest = key[len("neck.fusion_stage.layers.") :].split(".", 1)
            rest = rest.replace("projection", "out_conv").replace("residual_layer", "resConfUnit")
            rest = rest.replace("convolution", "conv")
            new = f"scratch.refinenet{4 - int(index)}.{rest}"
        elif key.startswith("head.head."):
            new = "scratch.output_conv." + key[len("head.head.") :]
        if new is not None:
            if new not in template or template[new].shape != value.shape:
                raise SystemExit(f"cannot map {key} -> {new}")
            out[new] = value
    return out


def depth_references(tmp: str) -> Any:
    """controlnet_aux's MidasDetector on hintset's random DPT-hybrid weights (converted)."""
    import torch
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    from safetensors.torch import load_file

    write_depth(Path(tmp), models=("dpt-hybrid",))
    hf_state = load_file(f"{tmp}/Intel/dpt-hybrid-midas/model.safetensors")
    template = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True).state_dict()
    torch.save(midas_state(hf_state, template), f"{tmp}/dpt_hybrid-midas-501f0c75.pt")
    return MidasDetector.from_pretrained(tmp)


def dwpose_reference(folder: Path) -> Any:
    """controlnet_aux 0.0.10's DWposeDetector around the ONNX Wholebody of easy-dwpose, whose
    pose stage gets the RGB image (controlnet_aux hands its Wholebody BGR)."""
    from controlnet_aux.dwpose import DWposeDetector
    from easy_dwpose.body_estimation import wholebody

    inference_pose = wholebody.inference_pose

    def pose_on_rgb(session: Any, boxes: Any, bgr: np.ndarray) -> Any:
        return inference_pose(session, boxes, np.ascontiguousarray(bgr[:, :, ::-1]))

    wholebody.inference_pose = pose_on_rgb
    detector = DWposeDetector.__new__(DWposeDetector)  # its __init__ builds mmdet/mmpose models
    detector.pose_estimation = wholebody.Wholebody(
        str(folder / "yolox_l.onnx"), str(folder / "dw-ll_ucoco_384.onnx"), device="cpu"
    )
    return detector


def skimage_before_026() -> bool:
    """Whether scikit-image's ``remove_small_objects(min_size=n)`` still removes only sizes < n."""
    import skimage

    return tuple(int(p) for p in skimage.__version__.split(".")[:2]) < (0, 26)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=PHOTOS,
                        help="folder of images (jpg, png, webp, ...); default: the test photos")  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated rows (e.g. depth,hand_box)")
    args = parser.parse_args()
    try:
        import controlnet_aux  # noqa: F401
    except ImportError:
        raise SystemExit("controlnet_aux is not importable: see this script's docstring") from None
    import torch
    from controlnet_aux.anyline import AnylineDetector
    from controlnet_aux.canny import CannyDetector
    from controlnet_aux.hed import HEDdetector
    from controlnet_aux.lineart import LineartDetector
    from controlnet_aux.lineart_anime import LineartAnimeDetector
    from controlnet_aux.mediapipe_face import MediapipeFaceDetector
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.normalbae import NormalBaeDetector
    from controlnet_aux.open_pose import Body, Hand, OpenposeDetector
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.shuffle import ContentShuffleDetector
    from controlnet_aux.teed import TEEDdetector

    torch.set_num_threads(2)
    only = set(filter(None, args.only.split(",")))
    images = photos(args.photos, folder=args.dir)
    res = {"detect_resolution": SIZE, "image_resolution": SIZE, "output_type": "np"}
    with tempfile.TemporaryDirectory() as tmp:
        for write in (write_hed, write_mlsd, write_bae, write_openpose, write_lineart,
                      write_lineart_anime, write_pidinet, write_teed):  # fmt: skip
            write(Path(tmp))
        ours = {
            name: create(name, device="cpu", weights_dir=tmp, **params) if name != "canny" else
            create("canny")
            for name, params in (("canny", {}), ("hed", {}), ("scribble", {}))
        }  # fmt: skip
        ours["hed_safe"] = create("hed", safe=True, device="cpu", weights_dir=tmp)
        ours["lines"] = create("lines", backend="mlsd", device="cpu", weights_dir=tmp)
        ours["normal"] = create("normal", backend="bae", device="cpu", weights_dir=tmp)
        ours["pose"] = create("pose", backend="openpose", device="cpu", weights_dir=tmp)
        ours["pose_hands"] = create("pose", backend="openpose", hands=True, device="cpu",
                                    weights_dir=tmp)  # fmt: skip
        ours["pose_hands"].load()  # strict load of hand_pose_model.pth (published key set)
        ours["depth"] = create("depth", resolution=SIZE, device="cpu", weights_dir=tmp)
        ours["normal_from_depth"] = create("normal", backend="depth", depth_resolution=SIZE,
                                           device="cpu", weights_dir=tmp)  # fmt: skip
        for name, params in (("lineart", {}), ("lineart_anime", {}), ("softedge", {})):
            ours[name] = create(name, device="cpu", weights_dir=tmp, **params)
        ours["lineart_coarse"] = create("lineart", coarse=True, device="cpu", weights_dir=tmp)
        ours["softedge_safe"] = create("softedge", safe=True, device="cpu", weights_dir=tmp)
        ours["teed"] = create("teed", device="cpu", weights_dir=tmp)
        ours["teed_raw"] = create("teed", safe_steps=0, device="cpu", weights_dir=tmp)
        # scikit-image >= 0.26 reads the reference's min_size=36 as an inclusive bound
        ours["anyline"] = create("anyline", device="cpu", weights_dir=tmp,
                                 min_area=12 if skimage_before_026() else 13)  # fmt: skip
        # shuffle with ControlNet's legacy global draws (np.random.seed(0) before each image)
        ours["shuffle"] = lambda im: content_shuffle(im, np.random.RandomState(0))
        ours["face"] = create("face")
        if not only or "dwpose" in only:
            write_dwpose(Path(tmp) / "dwpose", tiny=True, boxes=DWPOSE_BOXES)
            ours["dwpose"] = create("pose", backend="dwpose", hands=True, face=True,
                                    device="cpu", weights_dir=f"{tmp}/dwpose")  # fmt: skip
            dwpose = dwpose_reference(Path(tmp) / "dwpose")
        midas = depth_references(tmp) if not only or {"depth", "normal_from_depth"} & only else None
        hed = HEDdetector.from_pretrained(tmp)
        ref_hand = Hand(f"{tmp}/hand_pose_model.pth")  # its strict loader: published key set
        openpose = OpenposeDetector(Body(f"{tmp}/body_pose_model.pth"), ref_hand)
        lineart = LineartDetector.from_pretrained(tmp)
        anime = LineartAnimeDetector.from_pretrained(tmp)
        pidi = PidiNetDetector.from_pretrained(tmp)
        teed = TEEDdetector.from_pretrained(tmp, filename="7_model.pth")
        anyline = AnylineDetector.from_pretrained(tmp, filename="MTEED.pth")
        teed_res = {"detect_resolution": SIZE, "output_type": "np"}

        def ref_shuffle(im: np.ndarray) -> np.ndarray:
            np.random.seed(0)
            return ContentShuffleDetector()(im, **res)

        refs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "canny": lambda im: first_channel(CannyDetector()(im, 100, 200, **res)),
            "hed": lambda im: first_channel(hed(im, **res)),
            "hed_safe": lambda im: first_channel(hed(im, safe=True, **res)),
            "scribble": lambda im: first_channel(hed(im, scribble=True, **res)),
            "lines": lambda im: first_channel(
                MLSDdetector.from_pretrained(tmp, filename="mlsd_large_512_fp32.pth")(
                    im, 0.1, 0.1, **res
                )
            ),
            "normal": lambda im: NormalBaeDetector.from_pretrained(tmp)(im, **res),
            "pose": lambda im: openpose(im, include_hand=False, **res),
            "pose_hands": lambda im: openpose(im, include_hand=True, **res),
            "depth": lambda im: first_channel(midas(im, **res)),
            # 1.0's app threshold (0.4); controlnet_aux's own default is 0.1
            "normal_from_depth": lambda im: midas(im, bg_th=0.4, depth_and_normal=True, **res)[1],
            "lineart": lambda im: first_channel(lineart(im, **res)),
            "lineart_coarse": lambda im: first_channel(lineart(im, coarse=True, **res)),
            "lineart_anime": lambda im: first_channel(anime(im, **res)),
            "softedge": lambda im: first_channel(pidi(im, **res)),
            "softedge_safe": lambda im: first_channel(pidi(im, safe=True, **res)),
            "shuffle": ref_shuffle,
            "face": lambda im: MediapipeFaceDetector()(im, max_faces=1, min_confidence=0.5, **res),
            "dwpose": lambda im: dwpose(im, **res),
            "teed": lambda im: first_channel(teed(im, safe_steps=2, **teed_res)),
            "teed_raw": lambda im: first_channel(teed(im, safe_steps=0, **teed_res)),
            "anyline": lambda im: first_channel(anyline(im, **teed_res)),
        }
        face_images = photos(0, FACE_PHOTOS) if args.dir == PHOTOS else images
        rows = []
        for name, annotator in ours.items():
            if only and name not in only:
                continue
            start = time.perf_counter()
            results = []
            for im in face_images if name == "face" else images:
                mine = annotator(im)
                results.append((*compare(mine, refs[name](im)), np.mean(mine > 0) * 100))
            rows.append((name, results, time.perf_counter() - start))
        # hands on a fixed box (random body weights rarely find arms): network, peaks, drawing
        arm = [None] * 5 + [(200.0, 150.0, 1.0), (200.0, 260.0, 1.0), (200.0, 360.0, 1.0)]
        arm += [None] * 10
        results = []
        start = time.perf_counter()
        for im in images if not only or "hand_box" in only else []:
            box = hand_boxes(arm, im.shape[:2])[0]
            found = ours["pose_hands"]._hands(im, arm)
            drawn = draw_people(im.shape[:2], [{"body": [None] * 18, **found}])
            reference = reference_hand_map(ref_hand, im, box)
            results.append((*compare(drawn, reference), np.mean(drawn > 0) * 100))
        if results:
            rows.append(
                ("hand_box: hand keypoints on a fixed box", results, time.perf_counter() - start)
            )
    shape = "x".join(str(s) for s in images[0].shape[1::-1])
    print(f"controlnet_aux 0.0.10 vs hintset, {len(images)} photos (first {shape}), CPU\n")
    print("| map | identical | max abs diff | % pixels diff > 1 | % non-zero (ours) | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, results, seconds in rows:
        same = sum(r[0] for r in results)
        print(
            f"| {name} | {same}/{len(results)} | {max(r[1] for r in results)} | "
            f"{np.mean([r[2] for r in results]):.3f} | {np.mean([r[3] for r in results]):.1f} | "
            f"{seconds:.0f} |"
        )
    print("\nNo controlnet_aux 0.0.10 reference:")
    for (name, backend), why in NO_REFERENCE.items():
        print(f"- {name}{f' {backend}' if backend else ''}: {why}")


if __name__ == "__main__":
    main()
