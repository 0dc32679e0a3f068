"""Test-only weight writers: random weights in the exact published layout of every network.

Real size by default (the same file names, keys, shapes and formats as the published
checkpoints), tiny configs of the same architecture classes for the transformers models.
Used by the tests and the benchmarks; nothing in ``annotators/`` imports this module.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from annotators import ade20k, depth, seg
from annotators.hed import HED_WEIGHTS, build_hed
from annotators.lineart import LINEART_COARSE_WEIGHTS, LINEART_WEIGHTS, build_lineart
from annotators.lineart_anime import ANIME_WEIGHTS, build_anime
from annotators.mlsd import MLSD_WEIGHTS, build_mlsd
from annotators.normal import BAE_WEIGHTS, build_bae
from annotators.openpose import BODY_WEIGHTS, HAND_WEIGHTS
from annotators.softedge import PIDINET_WEIGHTS, build_pidinet
from annotators.teed import ANYLINE_WEIGHTS, TEED_WEIGHTS, build_teed
from tests.weights_backends import write_dsine, write_marigold


def random_state(build: Callable[[], Any], seed: int = 0) -> dict[str, Any]:
    """State dict of a freshly initialised network (random weights, the exact published layout).

    BatchNorm statistics are randomised too (positive variances) so the test networks do
    more than pass inputs through.
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand_like(tensor))
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint with torch.save (the published ``.pth``/``.pt`` format)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path))


def write_hed(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``ControlNetHED.pth`` in the published layout: real size, float16."""
    path = Path(folder) / HED_WEIGHTS.filename
    write_state(path, {k: v.half() for k, v in random_state(build_hed).items()})
    return [path]


def write_mlsd(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``mlsd_large_512_fp32.pth`` in the published layout (always real size)."""
    path = Path(folder) / MLSD_WEIGHTS.filename
    write_state(path, random_state(build_mlsd))
    return [path]


def write_bae(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``scannet.pt`` ({"model": state dict}) in the published layout (real size)."""
    path = Path(folder) / BAE_WEIGHTS.filename
    write_state(path, {"model": random_state(build_bae)})
    return [path]


def write_openpose(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Random ``body_pose_model.pth`` and ``hand_pose_model.pth`` (published flat keys, real size)."""
    from annotators.nets.openpose import build_body, build_hand

    paths = []
    for spec, build in ((BODY_WEIGHTS, build_body), (HAND_WEIGHTS, build_hand)):
        path = Path(folder) / spec.filename
        write_state(path, random_state(build))
        paths.append(path)
    return paths


def save_random(
    folder: Path, build_model: Callable[[], Any], build_processor: Callable[[], Any], seed: int = 0
) -> list[Path]:
    """Build a transformers model with random weights and ``save_pretrained`` it (+ processor)."""
    import torch

    from annotators.hf_models import quiet_transformers

    quiet_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    build_model().save_pretrained(str(folder), safe_serialization=True)
    build_processor().save_pretrained(str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())


def write_models(
    family: Any,
    build: Callable[[Any, bool], Any],
    processor: Callable[[Any], Any],
    folder: Path,
    tiny: bool,
    models: tuple[str, ...] | list[str] | None,
) -> list[Path]:
    """Random weights for ``models`` of an annotator family (``family.MODELS`` short names)."""
    written: list[Path] = []
    for name in models or family.BENCHMARK_MODELS:
        spec = family.MODELS[name]
        written += save_random(
            Path(folder) / spec.repo_id,
            lambda spec=spec: build(spec, tiny),
            lambda spec=spec: processor(spec),
        )
    return written


# -- depth: configs written from code (published values, or tiny ones with the same classes) ----
#: Depth Anything V2 backbone (DINOv2) sizes: hidden, layers, heads, out_indices, fusion, neck
_DA_SIZES = {
    "small": (384, 12, 6, [3, 6, 9, 12], 64, [48, 96, 192, 384]),
    "base": (768, 12, 12, [3, 6, 9, 12], 128, [96, 192, 384, 768]),
    "large": (1024, 24, 16, [5, 12, 18, 24], 256, [256, 512, 1024, 1024]),
}


# -- configs, written from code (published values, or tiny ones with the same classes) --------
def dpt_hybrid_config(tiny: bool = False) -> Any:
    """DPT-Hybrid MiDaS: ViT-B/16 on a BiT-R50 stem, 384x384 (values of Intel/dpt-hybrid-midas)."""
    from transformers import BitConfig, DPTConfig

    if tiny:
        bit = BitConfig(
            global_padding="same",
            layer_type="bottleneck",
            depths=[1, 1, 1],
            hidden_sizes=[16, 32, 64, 128],
            embedding_size=8,
            num_groups=4,
            out_features=["stage1", "stage2", "stage3"],
            embedding_dynamic_padding=True,
        )
        return DPTConfig(
            is_hybrid=True,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            backbone_out_indices=[0, 1, 2, 3],
            reassemble_factors=[1, 1, 1, 0.5],
            neck_hidden_sizes=[16, 32, 32, 32],
            fusion_hidden_size=16,
            backbone_config=bit,
            backbone_featmap_shape=[1, 64, 24, 24],
            readout_type="project",
        )
    bit = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[3, 4, 9],
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    return DPTConfig(
        is_hybrid=True,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=16,
        backbone_out_indices=[2, 5, 8, 11],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        fusion_hidden_size=256,
        use_batch_norm_in_fusion_residual=False,
        backbone_config=bit,
        backbone_featmap_shape=[1, 1024, 24, 24],
        neck_ignore_stages=[0, 1],
    )


#: Depth Anything V1 taps the last four DINOv2 layers (transformers' conversion script)
_DA_V1_OUT = {"small": [9, 10, 11, 12], "base": [9, 10, 11, 12], "large": [21, 22, 23, 24]}


def depth_anything_v2_config(size: str = "small", tiny: bool = False, v1: bool = False) -> Any:
    """Depth Anything V2 (or V1: ``v1=True``; DINOv2 ViT-S/B/L 14 + DPT head), relative depth."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if tiny:
        hidden, layers, heads, out_idx, fusion, neck = 32, 4, 2, [1, 2, 3, 4], 16, [8, 16, 32, 32]
        extra = {"head_hidden_size": 8}
    else:
        hidden, layers, heads, out_idx, fusion, neck = _DA_SIZES[size]
        out_idx = _DA_V1_OUT[size] if v1 else out_idx
        extra = {}
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        out_indices=out_idx,
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=14,
        fusion_hidden_size=fusion,
        neck_hidden_sizes=neck,
        depth_estimation_type="relative",
        **extra,
    )


def depth_processor(family: str) -> Any:
    """The published image processor settings of a family."""
    from transformers import DPTImageProcessor

    if family == "dpt-hybrid":  # squash to 384x384, [-1, 1] (MiDaS DPT normalisation)
        return DPTImageProcessor(
            size={"height": 384, "width": 384},
            keep_aspect_ratio=False,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
    return DPTImageProcessor(  # short side >= 518, multiple of 14, ImageNet normalisation
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def build_depth_model(spec: Any, tiny: bool = False) -> Any:
    """A randomly initialised network of ``spec``'s architecture."""
    from transformers import DepthAnythingForDepthEstimation, DPTForDepthEstimation

    if spec.family == "dpt-hybrid":
        return DPTForDepthEstimation(dpt_hybrid_config(tiny))
    v1 = spec.family == "depth-anything-v1"
    return DepthAnythingForDepthEstimation(depth_anything_v2_config(spec.size, tiny, v1=v1))


def write_depth(
    folder: Path, *, tiny: bool = False, models: tuple[str, ...] | list[str] | None = None
) -> list[Path]:
    """Random depth models as ``folder/<hub id>/`` (config, safetensors, processor); ``tiny``
    configs of the same classes, or the published sizes; ``models`` defaults to the benchmark's."""
    return write_models(depth, build_depth_model, lambda spec: depth_processor(spec.family),
                        folder, tiny, models)  # fmt: skip


# -- seg ------------------------------------------------------------------------------
#: ConvNeXt sizes of the UperNet checkpoints: depths, hidden sizes, auxiliary head input
_CONVNEXT = {
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768], 384),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768], 384),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024], 512),
}


def _labels(classes: tuple[str, ...] = ade20k.CLASSES) -> dict[str, Any]:
    id2label = dict(enumerate(classes))
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def upernet_convnext_config(size: str = "small", tiny: bool = False) -> Any:
    """UperNet + ConvNeXt on ADE20K (values of openmmlab/upernet-convnext-*)."""
    from transformers import ConvNextConfig, UperNetConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if tiny:
        backbone = ConvNextConfig(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], out_features=stages
        )
        return UperNetConfig(
            backbone_config=backbone,
            hidden_size=16,
            auxiliary_in_channels=32,
            auxiliary_channels=8,
            num_labels=150,
            **_labels(),
        )
    depths, hidden, aux_in = _CONVNEXT[size]
    backbone = ConvNextConfig(depths=depths, hidden_sizes=hidden, out_features=stages)
    return UperNetConfig(
        backbone_config=backbone, auxiliary_in_channels=aux_in, num_labels=150, **_labels()
    )


def segformer_config(tiny: bool = False) -> Any:
    """SegFormer MiT-B0 with the all-MLP decoder, 150 ADE20K classes (transformers' defaults are B0)."""
    from transformers import SegformerConfig

    if tiny:
        return SegformerConfig(
            depths=[1, 1, 1, 1],
            hidden_sizes=[8, 16, 24, 32],
            num_attention_heads=[1, 1, 1, 1],
            decoder_hidden_size=16,
            num_labels=150,
            **_labels(),
        )
    return SegformerConfig(
        depths=[2, 2, 2, 2],
        hidden_sizes=[32, 64, 160, 256],
        num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        decoder_hidden_size=256,
        num_labels=150,
        **_labels(),
    )


def seg_processor() -> Any:
    """The published processor settings: 512x512, ImageNet normalisation."""
    from transformers import SegformerImageProcessor

    return SegformerImageProcessor(size={"height": 512, "width": 512})


def build_seg_model(spec: Any, tiny: bool = False) -> Any:
    """A randomly initialised network of ``spec``'s architecture."""
    from transformers import SegformerForSemanticSegmentation, UperNetForSemanticSegmentation

    if spec.family == "segformer":
        return SegformerForSemanticSegmentation(segformer_config(tiny))
    return UperNetForSemanticSegmentation(upernet_convnext_config(spec.size, tiny))


def write_seg(
    folder: Path, *, tiny: bool = False, models: tuple[str, ...] | list[str] | None = None
) -> list[Path]:
    """Random ADE20K seg models as ``folder/<hub id>/``, as :func:`write_depth`."""
    return write_models(seg, build_seg_model, lambda spec: seg_processor(), folder, tiny, models)


# -- OneFormer (seg): tiny Swin config, the published folder (CLIP tokenizer, .bin weights) ----
def oneformer_config(tiny: bool = True, classes: tuple[str, ...] = ade20k.CLASSES) -> Any:
    """OneFormer with a Swin backbone and ADE20K's 150 classes, or ``classes`` (COCO's 133)
    (a tiny config of the classes)."""
    from transformers import OneFormerConfig, SwinConfig

    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                      out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    return OneFormerConfig(
        backbone_config=swin, hidden_dim=32, conv_dim=32, mask_dim=32, encoder_feedforward_dim=64,
        dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        num_queries=8, text_encoder_width=32, text_encoder_num_layers=1, text_encoder_n_ctx=4,
        text_encoder_proj_layers=1, query_dec_layers=1, task_seq_len=77, max_seq_len=77,
        num_labels=len(classes), **_labels(classes),
    )  # fmt: skip


def clip_tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer (OneFormer's) over letters and a few words, built offline."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters),
              "the</w>", "task</w>", "is</w>", "semantic</w>"]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         pad_token="<|endoftext|>")  # fmt: skip


def write_oneformer(folder: Path, *, repo_id: str = "shi-labs/oneformer_ade20k_swin_large",
                    seed: int = 0, classes: tuple[str, ...] = ade20k.CLASSES) -> list[Path]:  # fmt: skip
    """A random tiny OneFormer as ``folder/<repo_id>/`` with the published files: config.json,
    pytorch_model.bin, preprocessor_config.json (0..255 mean/std), CLIP tokenizer files."""
    import torch
    from transformers import OneFormerForUniversalSegmentation

    target = Path(folder) / repo_id
    torch.manual_seed(seed)
    model = spread(OneFormerForUniversalSegmentation(oneformer_config(classes=classes)), 0.3)
    model.save_pretrained(str(target))
    torch.save(model.state_dict(), str(target / "pytorch_model.bin"))
    (target / "model.safetensors").unlink()
    clip_tokenizer(target).save_pretrained(str(target))
    info = "ade20k" if len(classes) == 150 else "coco"
    processor = {
        "image_processor_type": "OneFormerImageProcessor", "do_normalize": True,
        "do_resize": True, "size": {"shortest_edge": 512, "longest_edge": 2048},
        "image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375],
        "num_labels": len(classes), "task_seq_length": 77, "class_info_file": f"{info}_panoptic.json",
        "repo_path": "shi-labs/oneformer_demo", "ignore_index": 255,
    }  # fmt: skip
    (target / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return sorted(p for p in target.iterdir() if p.is_file())


# -- SAM: a tiny config of the published classes, processor at 64 px ------------------------
def write_sam(folder: Path, *, repo_id: str = "facebook/sam-vit-huge", seed: int = 0) -> list[Path]:
    """A random tiny SAM as ``folder/<repo_id>/`` (config.json, model.safetensors,
    preprocessor_config.json); the processor works at 64 px instead of 1024."""
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=64, patch_size=16, output_channels=16, mlp_dim=64,
                             global_attn_indexes=[1], window_size=2, num_pos_feats=8)  # fmt: skip
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                    mask_input_channels=4)  # fmt: skip
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   mlp_dim=32, iou_head_hidden_dim=16)  # fmt: skip
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt,
                       mask_decoder_config=decoder)  # fmt: skip
    processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                  mask_size={"longest_edge": 16},
                                  mask_pad_size={"height": 16, "width": 16})  # fmt: skip
    return save_random(Path(folder) / repo_id, lambda: SamModel(config), lambda: processor, seed)


# -- captioning models (``--caption``): tiny configs of the published classes ------------------
#: a small lower-case word list: BERT-style (BLIP) vocabulary for the tiny tokenizers
CAPTION_WORDS = (
    "a an the of on in with and to near two man woman dog cat bus train car plate "
    "food table street field grass room kitchen bed people group sitting standing "
    "holding playing riding red blue white black large small next top front"
).split()
#: the files the published BLIP captioning repos hold (besides README, .bin and TF weights)
BLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json",
              "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")  # fmt: skip


def spread(model: Any, std: float = 0.2) -> Any:
    """Redraw a tiny model's weight matrices wider than transformers' init (std 0.02), so its
    greedy captions depend on the image instead of repeating one sentence for all."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, std)
    return model


def blip_tokenizer(folder: Path) -> Any:
    """A BERT tokenizer (BLIP's) over :data:`CAPTION_WORDS`, built offline; ``[DEC]`` is BOS."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *CAPTION_WORDS]
    path = Path(folder) / "vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab) + "\n")
    ids = {token: i for i, token in enumerate(vocab)}
    return BertTokenizer(vocab=ids, bos_token="[DEC]", do_lower_case=True)


def write_blip(folder: Path, *, repo_id: str = "Salesforce/blip-image-captioning-base",
               seed: int = 3) -> list[Path]:  # fmt: skip
    """A random tiny BLIP captioner as ``folder/<repo_id>/`` with exactly the published files
    (seed 3: its greedy captions of the test photos are all non-empty and distinct)."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    target = Path(folder) / repo_id
    tokenizer = blip_tokenizer(target)
    size = 32  # the published models work at 384x384
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=size, patch_size=16),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, encoder_hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                         eos_token_id=tokenizer.sep_token_id),
        projection_dim=32,
    )  # fmt: skip
    images = BlipImageProcessor(size={"height": size, "width": size})
    save_random(target, lambda: spread(BlipForConditionalGeneration(config)), lambda: images,
                seed=seed)  # fmt: skip
    tokenizer.save_pretrained(str(target))
    # the published repos predate processor_config.json: the processor class is named here
    conf = json.loads((target / "preprocessor_config.json").read_text())
    conf["processor_class"] = BlipProcessor.__name__
    (target / "preprocessor_config.json").write_text(json.dumps(conf, indent=2) + "\n")
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "cls_token", "mask_token",
                                                  "pad_token", "sep_token", "unk_token")}  # fmt: skip
    (target / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    for path in target.iterdir():
        if path.name not in BLIP_FILES:
            path.unlink()
    return sorted(target / name for name in BLIP_FILES)


def florence2_tokenizer() -> Any:
    """A byte-level BPE tokenizer (Florence-2's BART one) built offline: lower-case letters,
    the space symbol and :data:`CAPTION_WORDS` with and without a leading space (no merges,
    so prompts tokenize letter by letter; other characters are dropped)."""
    from transformers import BartTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    space = "\u0120"  # byte-level BPE's symbol for a leading space
    letters = [*"abcdefghijklmnopqrstuvwxyz", space]
    words = [w for w in CAPTION_WORDS if len(w) > 1]
    tokens = [*specials, *letters, *words, *(space + w for w in words)]
    vocab = {token: i for i, token in enumerate(tokens)}
    return BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})


def write_florence2(folder: Path, *, repo_id: str = "florence-community/Florence-2-base",
                    seed: int = 0) -> list[Path]:  # fmt: skip
    """A random tiny Florence-2 as ``folder/<repo_id>/``, as ``save_pretrained`` writes the
    community repos (config, safetensors, processor and tokenizer files)."""
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tokenizer = florence2_tokenizer()
    size, stride = 64, 32  # published: 768 px, 577 image tokens (24 x 24 + 1)
    tokens = (size // stride) ** 2 + 1
    config = Florence2Config(
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[16, 32, 32, 32], num_heads=[1, 2, 2, 2],
                           num_groups=[1, 2, 2, 2], window_size=2, projection_dim=32),
        text_config=dict(model_type="bart", vocab_size=len(tokenizer), d_model=32,
                         encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
                         eos_token_id=2, decoder_start_token_id=2),
        image_token_id=tokenizer.image_token_id,
    )  # fmt: skip
    images = CLIPImageProcessor(size={"height": size, "width": size}, do_center_crop=False,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                                image_seq_length=tokens)  # fmt: skip
    processor = Florence2Processor(images, tokenizer)
    return save_random(Path(folder) / repo_id,
                       lambda: spread(Florence2ForConditionalGeneration(config)),
                       lambda: processor, seed=seed)  # fmt: skip


def write_lineart(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Random ``sk_model.pth`` and ``sk_model2.pth`` (plain state dicts, real size, different seeds)."""
    paths = []
    for seed, spec in enumerate((LINEART_WEIGHTS, LINEART_COARSE_WEIGHTS)):
        path = Path(folder) / spec.filename
        write_state(path, random_state(build_lineart, seed=seed))
        paths.append(path)
    return paths


def write_lineart_anime(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``netG.pth`` with DataParallel's ``module.`` key prefix (real size, 218 MB)."""
    path = Path(folder) / ANIME_WEIGHTS.filename
    write_state(path, {f"module.{k}": v for k, v in random_state(build_anime).items()})
    return [path]


def write_pidinet(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``table5_pidinet.pth``: ``{"state_dict": {"module.<key>": ...}}`` (real size)."""
    path = Path(folder) / PIDINET_WEIGHTS.filename
    state = {f"module.{k}": v for k, v in random_state(build_pidinet).items()}
    write_state(path, {"epoch": 0, "state_dict": state})
    return [path]


def write_teed(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Random ``7_model.pth`` (TEED) and ``MTEED.pth`` (Anyline): plain state dicts, real size
    (58,910 parameters), different seeds."""
    paths = []
    for seed, spec in enumerate((TEED_WEIGHTS, ANYLINE_WEIGHTS)):
        paths.append(Path(folder) / spec.filename)
        write_state(paths[-1], random_state(build_teed, seed=seed))
    return paths


#: network -> writer(folder, tiny=...) of its random weights
# -- DWPose: ONNX files with the published names, shapes and dtypes; outputs the test controls --
#: (x1, y1, x2, y2, score) of the person the small detector reports, in 640x640 letterbox pixels
DWPOSE_BOX = (200.0, 40.0, 440.0, 440.0, 0.9)


def _onnx_model(nodes: list, inputs: list, outputs: list, consts: dict[str, Any]) -> Any:
    """A checked ONNX model (opset 13, IR 8: loads in every onnxruntime since 1.10)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "hintset-test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def dwpose_detector(boxes: list[tuple[float, ...]] = (DWPOSE_BOX,)) -> Any:
    """A ``yolox_l.onnx`` stand-in: input ``images`` (1, 3, 640, 640) float32, output ``output``
    (1, 8400, 85) float32 as YOLOX-L's export (raw x, y, log w, log h on the stride 8/16/32 grid,
    then sigmoid objectness and 80 class scores), constant except for 0 x the input's mean.
    Each box (x1, y1, x2, y2, score[, class]) sits in the stride-32 cell holding its centre."""
    import numpy as np
    from onnx import TensorProto, helper

    table = np.zeros((1, 8400, 85), np.float32)
    for x1, y1, x2, y2, score, *cls in boxes:
        cx, cy, gx, gy = (x1 + x2) / 2, (y1 + y2) / 2, int((x1 + x2) / 64), int((y1 + y2) / 64)
        row = 8000 + gy * 20 + gx
        table[0, row, :4] = (
            cx / 32 - gx,
            cy / 32 - gy,
            np.log((x2 - x1) / 32),
            np.log((y2 - y1) / 32),
        )
        table[0, row, 4], table[0, row, 5 + int(cls[0] if cls else 0)] = 1.0, score
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output"]),
    ]
    return _onnx_model(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
        {"table": table, "zero": np.zeros((), np.float32)},
    )


def dwpose_pose(keypoints: Any = None, seed: int = 0, count: int = 133,
                size: tuple[int, int] = (384, 288)) -> Any:  # fmt: skip
    """A ``dw-ll_ucoco_384.onnx`` stand-in: input ``input`` (1, 3, 384, 288) float32, outputs
    ``simcc_x`` (1, 133, 576) and ``simcc_y`` (1, 133, 768) float32 as RTMPose's export
    (``count`` keypoints and crop ``size`` (h, w) for other RTMPose files: 17, (256, 256)).

    ``keypoints`` (count, 3) crop x, y, score: constant one-hot SimCC peaks (+ 0 x the input);
    None: random SimCC that depend on the crop (32 or 48 px block means through random
    matrices, a random score offset per keypoint), so crop, normalisation and colour order
    all matter.
    """
    import numpy as np
    from onnx import TensorProto, helper

    height, width = size
    shapes = {"simcc_x": [1, count, 2 * width], "simcc_y": [1, count, 2 * height]}
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])]
    if keypoints is not None:
        consts: dict[str, Any] = {"zero": np.zeros((), np.float32)}
        nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
                 helper.make_node("Mul", ["mean", "zero"], ["nothing"])]  # fmt: skip
        for axis, name in enumerate(shapes):
            table = np.zeros(shapes[name], np.float32)
            for k, point in enumerate(np.asarray(keypoints, np.float64)):
                table[0, k, int(round(point[axis] * 2))] = point[2]
            consts[f"{name}_table"] = table
            nodes.append(helper.make_node("Add", [f"{name}_table", "nothing"], [name]))
        return _onnx_model(nodes, inputs, outputs, consts)
    rng = np.random.default_rng(seed)
    block = 48 if height % 48 == 0 and width % 48 == 0 else 32
    features = 3 * (height // block) * (width // block)
    consts = {
        "shape": np.array([1, 1, features], np.int64),
        "mix": rng.normal(size=(count, features)).astype(np.float32),
        "offset": rng.uniform(-0.3, 0.1, size=(count, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "AveragePool", ["input"], ["blocks"], kernel_shape=[block] * 2, strides=[block] * 2
        ),
        helper.make_node("Reshape", ["blocks", "shape"], ["features"]),
        helper.make_node("Mul", ["features", "mix"], ["mixed"]),
    ]
    for name, (_, _, bins) in shapes.items():
        consts[f"{name}_proj"] = (0.016 * rng.normal(size=(features, bins))).astype(np.float32)
        nodes += [helper.make_node("MatMul", ["mixed", f"{name}_proj"], [f"{name}_raw"]),
                  helper.make_node("Add", [f"{name}_raw", "offset"], [name])]  # fmt: skip
    return _onnx_model(nodes, inputs, outputs, consts)


class _OnnxGraph:
    """Builds a real-size ONNX graph with random weights (convolutions as exported: BatchNorm
    folded into the bias, SiLU as x * sigmoid(x))."""

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.rng, self.nodes, self.consts, self.count = np.random.default_rng(seed), [], {}, 0

    def const(self, value: Any) -> str:
        import numpy as np

        self.count += 1
        name = f"c{self.count}"
        value = np.asarray(value)
        self.consts[name] = value.astype(np.float32) if value.dtype.kind == "f" else value
        return name

    def op(self, kind: str, inputs: list[str], out: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.count += 1
        out = out or f"t{self.count}"
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def weight(self, *shape: int, fan_in: int) -> str:
        return self.const(self.rng.normal(0.0, fan_in**-0.5, shape))

    def conv(self, x: str, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1,
             act: bool = True, bias: float = 0.0) -> str:  # fmt: skip
        import numpy as np

        w = self.weight(cout, cin // groups, k, k, fan_in=cin // groups * k * k)
        b = self.const(np.full(cout, bias) + 0.01 * self.rng.normal(size=cout))
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4,
                    group=groups)  # fmt: skip
        return self.op("Mul", [y, self.op("Sigmoid", [y])]) if act else y

    def linear(self, x: str, cin: int, cout: int) -> str:
        return self.op("MatMul", [x, self.weight(cin, cout, fan_in=cin)])

    def cat(self, parts: list[str], axis: int = 1) -> str:
        return self.op("Concat", parts, axis=axis)

    def pool(self, x: str, k: int) -> str:
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)

    def scale_norm(self, x: str, dim: int) -> str:
        norm = self.op("ReduceL2", [x], axes=[-1], keepdims=1)
        norm = self.op("Max", [self.op("Mul", [norm, self.const(dim**-0.5)]), self.const(1e-5)])
        return self.op("Mul", [self.op("Div", [x, norm]), self.const(1.0)])

    def model(self, inputs: list, outputs: list) -> Any:
        return _onnx_model(self.nodes, inputs, outputs, self.consts)


def yolox_l() -> Any:
    """YOLOX-L at real size (54 M parameters): Focus stem, CSPDarknet (3/9/9/3 bottlenecks,
    SPP 5/9/13), PAFPN, decoupled heads at strides 8/16/32; objectness biased low so nobody is
    found (each image then runs the pose network once, on the whole image)."""
    import numpy as np
    from onnx import TensorProto, helper

    g = _OnnxGraph(1)

    def csp(x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        hidden = cout // 2
        a, b = g.conv(x, cin, hidden), g.conv(x, cin, hidden)
        for _ in range(n):
            y = g.conv(g.conv(a, hidden, hidden), hidden, hidden, 3)
            a = g.op("Add", [a, y]) if shortcut else y
        return g.conv(g.cat([a, b]), 2 * hidden, cout)

    def up(x: str) -> str:
        return g.op("Resize", [x, "", g.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")

    parts = [
        g.op(
            "Slice",
            ["images", g.const([r, c]), g.const([1 << 30] * 2), g.const([2, 3]), g.const([2, 2])],
        )  # fmt: skip
        for r, c in ((0, 0), (1, 0), (0, 1), (1, 1))
    ]
    x = g.conv(g.cat(parts), 12, 64, 3)
    x = csp(g.conv(x, 64, 128, 3, 2), 128, 128, 3, True)
    c3 = csp(g.conv(x, 128, 256, 3, 2), 256, 256, 9, True)
    c4 = csp(g.conv(c3, 256, 512, 3, 2), 512, 512, 9, True)
    x = g.conv(g.conv(c4, 512, 1024, 3, 2), 1024, 512)
    x = g.conv(g.cat([x, g.pool(x, 5), g.pool(x, 9), g.pool(x, 13)]), 2048, 1024)
    c5 = csp(x, 1024, 1024, 3, False)
    p5 = g.conv(c5, 1024, 512)
    x = csp(g.cat([up(p5), c4]), 1024, 512, 3, False)
    p4 = g.conv(x, 512, 256)
    out3 = csp(g.cat([up(p4), c3]), 512, 256, 3, False)
    out4 = csp(g.cat([g.conv(out3, 256, 256, 3, 2), p4]), 512, 512, 3, False)
    out5 = csp(g.cat([g.conv(out4, 512, 512, 3, 2), p5]), 1024, 1024, 3, False)
    levels = []
    for x, cin in ((out3, 256), (out4, 512), (out5, 1024)):
        stem = g.conv(x, cin, 256)
        cls = g.conv(g.conv(stem, 256, 256, 3), 256, 256, 3)
        reg = g.conv(g.conv(stem, 256, 256, 3), 256, 256, 3)
        head = [g.conv(reg, 256, 4, act=False),
                g.op("Sigmoid", [g.conv(reg, 256, 1, act=False, bias=-12.0)]),
                g.op("Sigmoid", [g.conv(cls, 256, 80, act=False)])]  # fmt: skip
        levels.append(g.op("Reshape", [g.cat(head), g.const(np.array([1, 85, -1]))]))
    g.op("Transpose", [g.cat(levels, axis=2)], "output", perm=[0, 2, 1])
    return g.model(
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
    )


def rtmpose_l() -> Any:
    """RTMPose-L 384x288 at real size (as dw-ll_ucoco_384): CSPNeXt (stem 32/32/64, stages of
    3/6/6/3 blocks with 5x5 depthwise convolutions and channel attention, SPPF), then the
    RTMCC head: 7x7 conv to 133 tokens, ScaleNorm + linear to 256, one gated attention unit
    (e = 512, s = 128), linear SimCC classifiers to 576 and 768 bins."""
    import numpy as np
    from onnx import TensorProto, helper

    g = _OnnxGraph(2)

    def cspnext(x: str, channels: int, n: int, identity: bool) -> str:
        mid = channels // 2
        main, short = g.conv(x, channels, mid), g.conv(x, channels, mid)
        for _ in range(n):
            y = g.conv(g.conv(main, mid, mid, 3), mid, mid, 5, groups=mid)
            y = g.conv(y, mid, mid)
            main = g.op("Add", [main, y]) if identity else y
        x = g.cat([main, short])
        gate = g.conv(g.op("GlobalAveragePool", [x]), channels, channels, act=False)
        x = g.op("Mul", [x, g.op("HardSigmoid", [gate], alpha=1 / 6, beta=0.5)])
        return g.conv(x, channels, channels)

    x = g.conv(g.conv(g.conv("input", 3, 32, 3, 2), 32, 32, 3), 32, 64, 3)
    for cin, cout, n, identity, spp in ((64, 128, 3, True, False), (128, 256, 6, True, False),
                                        (256, 512, 6, True, False), (512, 1024, 3, False, True)):  # fmt: skip
        x = g.conv(x, cin, cout, 3, 2)
        if spp:
            y = g.conv(x, cout, cout // 2)
            pools = [y]
            for _ in range(3):
                pools.append(g.pool(pools[-1], 5))
            x = g.conv(g.cat(pools), 2 * cout, cout)
        x = cspnext(x, cout, n, identity)
    x = g.op("Reshape", [g.conv(x, 1024, 133, 7, act=False), g.const(np.array([1, 133, 108]))])
    x = g.linear(g.scale_norm(x, 108), 108, 256)
    uv = g.linear(g.scale_norm(x, 256), 256, 1152)
    uv = g.op("Mul", [uv, g.op("Sigmoid", [uv])])
    u, v, base = (f"gau_{n}" for n in "uvb")
    g.nodes.append(helper.make_node("Split", [uv, g.const(np.array([512, 512, 128]))],
                                    [u, v, base], axis=-1))  # fmt: skip
    base = g.op("Unsqueeze", [base, g.const(np.array([2]))])
    qk = g.op("Add", [g.op("Mul", [base, g.const(g.rng.normal(size=(2, 128)))]),
                      g.const(np.zeros((2, 128)))])  # fmt: skip
    q = g.op("Gather", [qk, g.const(np.array(0))], axis=2)
    k = g.op("Gather", [qk, g.const(np.array(1))], axis=2)
    kernel = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    kernel = g.op("Relu", [g.op("Div", [kernel, g.const(128**0.5)])])
    kernel = g.op("Mul", [kernel, kernel])
    x2 = g.linear(g.op("Mul", [u, g.op("MatMul", [kernel, v])]), 512, 256)
    x = g.op("Add", [g.op("Mul", [x, g.const(np.ones(256))]), x2])
    g.op("MatMul", [x, g.weight(256, 576, fan_in=256)], "simcc_x")
    g.op("MatMul", [x, g.weight(256, 768, fan_in=256)], "simcc_y")
    shapes = {"simcc_x": [1, 133, 576], "simcc_y": [1, 133, 768]}
    return g.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()],
    )


def write_dwpose(
    folder: Path,
    *,
    tiny: bool = False,
    boxes: list[tuple[float, ...]] = (DWPOSE_BOX,),
    keypoints: Any = None,
) -> list[Path]:
    """``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` with the published names, shapes and dtypes.

    ``tiny``: small graphs whose outputs the caller controls (:func:`dwpose_detector`,
    :func:`dwpose_pose`); otherwise the real-size architectures with random weights
    (:func:`yolox_l`, :func:`rtmpose_l`), for speed."""
    import onnx

    from annotators.dwpose import DETECTOR_WEIGHTS, POSE_WEIGHTS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / DETECTOR_WEIGHTS.filename, folder / POSE_WEIGHTS.filename]
    detector = dwpose_detector(list(boxes)) if tiny else yolox_l()
    onnx.save(detector, str(paths[0]))
    onnx.save(dwpose_pose(keypoints) if tiny else rtmpose_l(), str(paths[1]))
    return paths


def write_densepose(folder: Path, *, tiny: bool = True, model: str = "r50") -> list[Path]:
    """``densepose_r50_fpn_dl.torchscript`` (or r101's) in the published form: a TorchScript
    archive whose ``forward(image, bgr=True)`` takes a 3xHxW uint8 RGB tensor and returns
    (boxes (N, 4) x1, y1, x2, y2, coarse segm (N, 2, 112, 112), fine segm (N, 25, 112, 112),
    u, v (N, 25, 112, 112)) as the export the DensePose preprocessors load. Here one person:
    the box of the pure red pixels (R > 200, G < 100; none: no person), fine parts in 24
    horizontal bands (label 1 at the top), body (coarse > 0) everywhere but the left quarter."""
    import torch

    from annotators.densepose import WEIGHTS

    class TinyDensePose(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(4.0))

        def forward(self, image: torch.Tensor, bgr: bool = True):
            red = (image[0] > 200) & (image[1] < 100)
            rows = torch.nonzero(red.any(dim=1)).flatten()
            cols = torch.nonzero(red.any(dim=0)).flatten()
            if rows.numel() == 0:
                none = torch.zeros(0, 25, 112, 112)
                return torch.zeros(0, 4), torch.zeros(0, 2, 112, 112), none, none, none
            box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            bands = torch.arange(112) * 24 // 112 + 1
            fine = (torch.arange(25)[:, None] == bands[None, :]).float() * self.gain
            fine = fine[:, :, None].expand(25, 112, 112)[None].contiguous()
            coarse = torch.zeros(1, 2, 112, 112)
            coarse[:, 1] = 1.0
            coarse[:, 1, :, :28] = -1.0
            return box.float()[None], coarse, fine, fine * 0.1, fine * 0.2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS[model].filename
    with warnings.catch_warnings():  # "torch.jit.script / save are deprecated" (torch >= 2.11)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(TinyDensePose()), str(path))
    return [path]


#: an animal box (x1, y1, x2, y2, score, COCO class 16: dog) in a 480x640 image
ANIMAL_BOX = (160.0, 120.0, 480.0, 360.0, 0.9, 16)


def write_animal_pose(
    folder: Path,
    *,
    tiny: bool = True,
    boxes: list[tuple[float, ...]] = (ANIMAL_BOX,),
    keypoints: Any = None,
) -> list[Path]:
    """``yolox_l.onnx`` and ``rtmpose-m_ap10k_256.onnx`` with the published names, shapes and
    dtypes (``input`` (1, 3, 256, 256) -> ``simcc_x``, ``simcc_y`` (1, 17, 512)); small graphs
    whose outputs the caller controls (``keypoints`` (17, 3) crop x, y, score, or random).
    ``tiny=False`` (the benchmarks): the real-size YOLOX-L, kept if already written (dwpose's),
    beside the small pose graph."""
    import onnx

    from annotators.animal_pose import POSE_WEIGHTS
    from annotators.dwpose import DETECTOR_WEIGHTS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / DETECTOR_WEIGHTS.filename, folder / POSE_WEIGHTS.filename]
    if tiny or not paths[0].exists():
        onnx.save(dwpose_detector(list(boxes)) if tiny else yolox_l(), str(paths[0]))
    onnx.save(dwpose_pose(keypoints, count=17, size=(256, 256)), str(paths[1]))
    return paths


WRITERS: dict[str, Callable[..., list[Path]]] = {
    "hed": write_hed,
    "mlsd": write_mlsd,
    "bae": write_bae,
    "openpose": write_openpose,
    "depth": write_depth,
    "seg": write_seg,
    "lineart": write_lineart,
    "lineart_anime": write_lineart_anime,
    "pidinet": write_pidinet,
    "dwpose": write_dwpose,
    "animal_pose": write_animal_pose,
    "teed": write_teed,
    "dsine": write_dsine,
    # tiny whatever ``tiny`` says: a 1.3B-parameter pipeline; a TorchScript stand-in (DensePose
    # runs only with its sha256 trusted: ``-p densepose.trusted_sha256=...``)
    "marigold": write_marigold,
    "densepose": write_densepose,
}


def write_all(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Every network's random weights into one folder (what the benchmarks use)."""
    return [path for write in WRITERS.values() for path in write(folder, tiny=tiny)]
