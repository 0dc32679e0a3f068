"""Test-only weight writers: random weights in the exact published layout of every network.

Real size by default (the same file names, keys, shapes and formats as the published
checkpoints), tiny configs of the same architecture classes for the transformers models.
Used by the tests and the benchmarks; nothing in ``annotators/`` imports this module.
"""

from __future__ import annotations

import json
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


def depth_anything_v2_config(size: str = "small", tiny: bool = False) -> Any:
    """Depth Anything V2 (DINOv2 ViT-S/B/L 14 + DPT head), relative depth."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if tiny:
        hidden, layers, heads, out_idx, fusion, neck = 32, 4, 2, [1, 2, 3, 4], 16, [8, 16, 32, 32]
        extra = {"head_hidden_size": 8}
    else:
        hidden, layers, heads, out_idx, fusion, neck = _DA_SIZES[size]
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
    return DepthAnythingForDepthEstimation(depth_anything_v2_config(spec.size, tiny))


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


def _labels() -> dict[str, Any]:
    id2label = dict(enumerate(ade20k.CLASSES))
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


#: network -> writer(folder, tiny=...) of its random weights
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
}


def write_all(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Every network's random weights into one folder (what the benchmarks use)."""
    return [path for write in WRITERS.values() for path in write(folder, tiny=tiny)]
