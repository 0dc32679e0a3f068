"""``hintset evaluate``: metrics, score-only mode on a real build, generation on a tiny base."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from evaluation import score
from evaluation.report import interval
from tests.conftest import run_cli
from tests.weights import write_depth


# -- metrics ----------------------------------------------------------------------------------
def test_pixel_f1_is_controlnet_plus_plus_definition():
    a = np.zeros((8, 8), np.uint8)
    a[2, :] = 255
    assert score.pixel_f1(a, a) == 1.0
    b = np.roll(a, 1, axis=0)  # one pixel off: pixel F1 0, the 2 px boundary F1 still 1
    assert score.pixel_f1(a, b) == 0.0 and score.edge_f1(a, b)["f1"] == 1.0
    half = a.copy()
    half[2, 4:] = 0  # 4 of 8 found, none wrong: 2*4 / (2*4 + 4)
    assert score.pixel_f1(a, half) == pytest.approx(8 / 12)
    assert score.pixel_f1(np.zeros_like(a), np.zeros_like(a)) == 0.0  # zero_division 0


def test_dense_metrics():
    rng = np.random.default_rng(0)
    depth = rng.integers(1, 256, (16, 16)).astype(np.uint8)
    assert score.depth_errors(depth, depth) == {"rmse": 0.0, "absrel": 0.0}
    assert score.depth_errors(depth, np.clip(depth.astype(int) + 10, 0, 255))["rmse"] <= 10
    normal = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    assert score.angular_error(normal, normal) == pytest.approx(0, abs=1e-3)
    flipped = 255 - normal  # every vector reversed (up to the half-grey offset)
    assert score.angular_error(normal, flipped) > 170
    labels = np.array([[0, 0, 1, 1]])
    assert score.seg_scores(labels, labels)["miou"] == 1.0
    assert score.seg_scores(labels, np.array([[0, 1, 1, 1]]))["miou"] == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )
    assert score.ssim(depth, depth) == pytest.approx(1.0)


def test_edge_f1_scores_alignment():
    """The learning demonstration's score: 1 for the same edges, low when shifted, 0 for none."""
    import cv2

    from evaluation.score import edge_f1

    ref = np.zeros((64, 64), np.uint8)
    cv2.circle(ref, (32, 32), 15, 255, 1)
    assert edge_f1(ref, ref)["f1"] == 1.0
    near = np.roll(ref, 1, axis=1)  # within the 2 px slack
    far = np.roll(ref, 8, axis=1)
    assert edge_f1(ref, near)["f1"] == 1.0
    assert edge_f1(ref, far)["f1"] < 0.5
    assert edge_f1(ref, np.zeros_like(ref)) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    half = ref.copy()
    half[:, 32:] = 0  # half the edges: precision stays 1, recall about 0.5
    score = edge_f1(ref, half)
    assert score["precision"] == 1.0 and 0.4 < score["recall"] < 0.6
    with pytest.raises(ValueError, match="differ in size"):
        edge_f1(ref, ref[:32])


def _pose(*people: np.ndarray) -> dict:
    return {"people": [{"pose_keypoints_2d": p.ravel().tolist()} for p in people]}


def test_pose_ap_with_oks():
    rng = np.random.default_rng(1)
    person = np.column_stack([rng.uniform(20, 80, (18, 2)), np.ones(18)])
    assert score.pose_scores(_pose(person), _pose(person)) == {"ap": 1.0, "oks": 1.0}
    moved = person.copy()
    moved[:, :2] += 6
    worse = score.pose_scores(_pose(person), _pose(moved))
    assert 0 <= worse["ap"] < 1 and 0 < worse["oks"] < 1
    assert score.pose_scores(_pose(person), _pose())["ap"] == 0.0  # nobody found
    assert score.pose_scores(_pose(), _pose(person)) == {}  # nobody to find: not scored


def test_interval_brackets_the_mean():
    stat = interval([0.1, 0.2, 0.3, 0.4, 0.5])
    assert stat["low"] < stat["mean"] < stat["high"] and stat["n"] == 5
    assert stat["mean"] == pytest.approx(0.3)
    assert interval([0.5])["low"] == interval([0.5])["high"] == 0.5


def test_unscorable_condition_is_one_clear_error():
    with pytest.raises(ValueError, match="no controllability metric for 'shuffle'"):
        score.kind_of("shuffle")


# -- score-only mode on a real build ----------------------------------------------------------
@pytest.fixture(scope="session")
def depth_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-weights")
    write_depth(folder, tiny=True, models=["dpt-hybrid"])
    return folder


@pytest.fixture(scope="session")
def built(tmp_path_factory, photos_dir, depth_weights) -> Path:
    """``hintset build`` of the repo's photos at 64 px with canny and depth (tiny DPT-hybrid
    weights, run at 64 px too)."""
    out = tmp_path_factory.mktemp("eval-ds") / "ds"
    run_cli("build", photos_dir, "-o", out, "-a", "canny,depth", "-p", "depth.resolution=64",
            "--resolution", "64", "--shard-size", "10", "--workers", "1", "--weights-dir",
            depth_weights, "-q", check=True, env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    return out


@pytest.fixture(scope="session")
def stored_images(built, tmp_path_factory) -> tuple[Path, Path]:
    """(own, other): each sample's stored image under its key, and under the next key."""
    own, other = tmp_path_factory.mktemp("own"), tmp_path_factory.mktemp("other")
    for tar in sorted((built / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for member in t.getmembers():
                if member.name.endswith(".jpg"):
                    (own / member.name).write_bytes(t.extractfile(member).read())
    files = sorted(own.glob("*.jpg"))
    for i, path in enumerate(files):
        shutil.copy(files[(i + 1) % len(files)], other / path.name)
    return own, other


@pytest.fixture
def weights_env(monkeypatch, depth_weights):
    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    monkeypatch.setenv("HINTSET_WEIGHTS_DIR", str(depth_weights))


def _mean(summary: dict, metric: str, run: int = 0) -> float:
    return summary["runs"][run]["metrics"][metric]["mean"]


def _own_and_other(built: Path, stored_images, out: Path, condition: str) -> tuple[dict, dict]:
    """Summaries of the samples' own stored images and of another sample's images."""
    from evaluation.run import evaluate

    return tuple(evaluate(str(built), condition, out / folder.name, generated=str(folder),
                          say=lambda _: None) for folder in stored_images)  # fmt: skip


def test_own_images_score_high_and_another_samples_low(built, stored_images, tmp_path,
                                                       weights_env):  # fmt: skip
    mine, theirs = _own_and_other(built, stored_images, tmp_path, "canny")
    assert _mean(mine, "f1") >= 0.5
    assert _mean(theirs, "f1") <= _mean(mine, "f1") / 2
    assert mine["runs"][0]["counts"]["scored_keys"] == 20


def test_depth_of_own_images_is_near_zero_with_the_same_weights(built, stored_images, tmp_path,
                                                                 weights_env):  # fmt: skip
    mine, theirs = _own_and_other(built, stored_images, tmp_path, "depth")
    assert mine["judge"]["weights"][0]["sha256"]  # judged by the recorded file
    # measured: 9.6 vs 37.3 (0..255); random tiny weights amplify the JPEG re-encode's noise
    assert _mean(mine, "rmse") < min(15, _mean(theirs, "rmse") / 3)


def test_judge_refuses_other_weights_than_the_dataset_was_made_with(built, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    from evaluation.judge import Judge, read_manifest

    other = tmp_path / "weights"
    from annotators import depth
    from tests.weights import build_depth_model, depth_processor, save_random

    spec = depth.MODELS["dpt-hybrid"]
    save_random(other / spec.repo_id, lambda: build_depth_model(spec, True),
                lambda: depth_processor(spec.family), seed=7)  # fmt: skip
    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    monkeypatch.setenv("HINTSET_WEIGHTS_DIR", str(other))
    with pytest.raises(ValueError, match="the same weights must judge"):
        Judge(read_manifest(str(built)), "depth")


def test_cli_counts_missing_and_unreadable_images(built, stored_images, tmp_path):
    own, _ = stored_images
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in sorted(own.glob("*.jpg"))[:3]:  # three keys; one as image 1 of its key
        shutil.copy(path, partial / path.name)
    first = sorted(own.glob("*.jpg"))[0]
    shutil.copy(first, partial / f"{first.stem}_1.png")
    (partial / f"{sorted(own.glob('*.jpg'))[5].stem}.png").write_bytes(b"not an image")
    (partial / "unrelated.png").write_bytes(b"x")
    out = tmp_path / "report"
    proc = run_cli("evaluate", "--data", built, "--condition", "canny", "--generated", partial,
                   "-o", out, env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "FAILED" in proc.stderr and "not an image" not in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["runs"][0]["counts"]
    assert counts == {"keys": 20, "scored_keys": 3, "images": 4, "missing_keys": 16,
                      "failed_images": 1}  # fmt: skip
    lines = (out / "samples.csv").read_text().splitlines()
    assert lines[0] == "run,key,image,file,f1,f1_2px" and len(lines) == 5
    notes = " ".join(summary["notes"])  # no CLIP/Inception weights here: one line each
    assert "clip-vit-base-patch16" in notes and "inception-2015-12-05.pt" in notes
    assert "| generated | 3 |" in proc.stdout


def test_score_only_runs_in_the_core_install(built, stored_images, tmp_path, without):
    """Without torch, transformers and matplotlib (the core install), canny scores still come
    out; CLIP and the histograms are each one note, not a traceback."""
    own, _ = stored_images
    out = tmp_path / "report"
    env = {**without("torch", "transformers", "matplotlib"), "HINTSET_OFFLINE": "1"}
    proc = run_cli("evaluate", "--data", built, "--condition", "canny", "--generated", own,
                   "-o", out, env=env)  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["metrics"]["f1"]["mean"] >= 0.5
    assert any("needs torch and transformers" in n for n in summary["notes"])
    assert "histograms need matplotlib" in (out / "report.html").read_text()
    proc = run_cli("evaluate", "--data", built, "--condition", "canny", "--model", tmp_path,
                   "--base-model", tmp_path, "-o", tmp_path / "gen", env=env)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: hintset evaluate --model needs torch, transformers (not installed): "
        "pip install 'hintset[train]'"
    ]


def test_cli_wrong_usage_is_one_line(built, tmp_path):
    proc = run_cli("evaluate", "--data", built, "--condition", "canny", "-o", tmp_path / "r")
    assert proc.returncode == 2 and "--generated DIR, or --model and --base-model" in proc.stderr
    proc = run_cli("evaluate", "--data", built, "--condition", "seg", "--generated", tmp_path,
                   "-o", tmp_path / "r")  # fmt: skip
    assert proc.returncode == 1 and "has no 'seg' maps; it has canny, depth" in proc.stderr


# -- generation mode on a tiny base -----------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny SD base, EXPORT folder holding diffusers/ with a ControlNet whose zero convolutions
    are made non-zero, so control visibly changes the images)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from training.tiny_base import write_tiny_base

    root = tmp_path_factory.mktemp("eval-gen")
    base = write_tiny_base(root / "base", seed=0)
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base / "unet"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "zero_conv" in name or "controlnet_mid_block" in name or "conv_out" in name:
                param.normal_(0, 0.5)
    net.save_pretrained(root / "export" / "diffusers")
    return base, root / "export"


def test_generation_runs_controlnet_and_baseline_and_resumes(built, tiny_export, tmp_path,
                                                             weights_env):  # fmt: skip
    base, export = tiny_export
    out = tmp_path / "report"
    args = ("evaluate", "--data", built, "--condition", "canny", "--model", export,
            "--base-model", base, "-o", out, "--limit", "2", "--steps", "2", "--resolution", "64",
            "--device", "cpu")  # fmt: skip
    proc = run_cli(*args, env={"HINTSET_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["controlnet", "no-control"]
    assert summary["runs"][0]["model"] == str(export) and summary["runs"][1]["model"] is None
    assert all(r["counts"]["scored_keys"] == 2 for r in summary["runs"])
    assert summary["settings"]["steps"] == 2 and summary["settings"]["guidance"] == 7.5
    ctrl = sorted((out / "images" / "controlnet").glob("*.png"))
    plain = sorted((out / "images" / "no-control").glob("*.png"))
    assert [p.name for p in ctrl] == [p.name for p in plain] and len(ctrl) == 2
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(ctrl, plain, strict=True))
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 2 * 3 + 2 and "no-control" in page  # grids, histograms
    # resume: a lost image is made again, the others are kept byte for byte
    kept = ctrl[1].read_bytes()
    ctrl[0].unlink()
    from evaluation.generate import Settings
    from evaluation.run import evaluate

    lines: list[str] = []
    evaluate(str(built), "canny", out, model=str(export), base=str(base), limit=2,
             settings=Settings(steps=2, resolution=64, device="cpu"), say=lines.append)  # fmt: skip
    assert "controlnet: 1 images generated, 1 already there" in lines
    assert "no-control: 0 images generated, 2 already there" in lines
    assert ctrl[1].read_bytes() == kept and ctrl[0].exists()


def test_pipeline_table_picks_the_family_from_the_configs(tiny_export):
    from evaluation.generate import family_of

    base, export = tiny_export
    family, folder, net_class = family_of(str(export), str(base))
    assert (family.name, family.pipeline, net_class) == (
        "sd15",
        "StableDiffusionControlNetPipeline",
        "ControlNetModel",
    )
    assert folder == str(export / "diffusers")


def test_protocol_fixes_its_settings_unless_given():
    from evaluation.generate import Settings, protocol_settings

    options = {"steps": 2, "guidance": 9.0, "scheduler": "default", "seed": 0, "batch_size": 4}
    fixed = protocol_settings("controlnet-plus-plus", options, explicit={"steps"})
    assert (fixed.steps, fixed.guidance, fixed.scheduler, fixed.seed) == (2, 7.5, "unipc", 42)
    assert (fixed.images_per_key, fixed.resolution, fixed.square) == (4, 512, True)
    assert fixed.negative_prompt == "worst quality, low quality"
    assert protocol_settings(None, options, set()) == Settings(**options)


# -- CLIP score with tiny weights in the published layout --------------------------------------
def write_tiny_clip(folder: Path) -> Path:
    """A random tiny CLIP saved as ``openai/clip-vit-base-patch16`` is (model, tokenizer, image
    processor files), with the tiny base's CLIP BPE vocabulary."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    from training.tiny_base import write_tokenizer

    write_tokenizer(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(tokenizer), max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=8,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_with_weights_found_through_the_weights_dir(tmp_path, monkeypatch):
    import torch

    from evaluation import quality
    from evaluation.run import Run
    from evaluation.samples import Sample

    write_tiny_clip(tmp_path / "w" / quality.CLIP_MODEL)
    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    monkeypatch.setenv("HINTSET_WEIGHTS_DIR", str(tmp_path / "w"))
    torch.manual_seed(0)
    images = tmp_path / "gen"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for key in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(images / f"{key}.png")
    run = Run("generated", images, rows=[{"key": k, "file": f"{k}.png"} for k in ("a", "b")])
    samples = [Sample(k, "red circle on blue background", b"") for k in ("a", "b")]
    added, notes = quality.measure([run], samples, say=lambda _: None)
    assert added == ["clip_score"]
    assert all(0 <= row["clip_score"] <= 100 for row in run.rows)
    assert len(notes) == 1 and "inception-2015-12-05.pt" in notes[0]  # FID/KID still missing


def test_controlnet_folder_of_an_export_a_checkpoint_and_a_hub_id(tmp_path):
    from evaluation.generate import controlnet_folder

    model = {"_class_name": "ControlNetModel"}
    (tmp_path / "ck" / "controlnet").mkdir(parents=True)
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"steps": 2}))  # the run's config
    (tmp_path / "ck" / "controlnet" / "config.json").write_text(json.dumps(model))
    (tmp_path / "ex" / "diffusers").mkdir(parents=True)
    (tmp_path / "ex" / "diffusers" / "config.json").write_text(json.dumps(model))
    assert controlnet_folder(str(tmp_path / "ck")) == str(tmp_path / "ck" / "controlnet")
    assert controlnet_folder(str(tmp_path / "ex")) == str(tmp_path / "ex" / "diffusers")
    assert controlnet_folder("owner/name") == "owner/name"
    with pytest.raises(ValueError, match="holds no ControlNet"):
        controlnet_folder(str(tmp_path))


def test_generation_with_an_sdxl_controlnet(built, tmp_path, weights_env):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from evaluation.generate import Settings
    from evaluation.run import evaluate
    from training.tiny_base import write_tiny_sdxl

    base = write_tiny_sdxl(tmp_path / "sdxl", seed=0)
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base / "unet"))
    net.save_pretrained(tmp_path / "net")
    summary = evaluate(str(built), "canny", tmp_path / "report", model=str(tmp_path / "net"),
                       base=str(base), limit=1, baseline=False, say=lambda _: None,
                       settings=Settings(steps=2, resolution=64, device="cpu"))  # fmt: skip
    assert [(r["name"], r["counts"]["images"]) for r in summary["runs"]] == [("controlnet", 1)]
