"""Image quality and text alignment, computed only when their weights are found.

CLIP score (ControlNet++'s: ``openai/clip-vit-base-patch16``, 100 * max(cos(image, text), 0)
per image) and FID / KID against the dataset's own images of the same keys, with the
TorchScript Inception-v3 that clean-fid and StyleGAN2-ADA use (``inception-2015-12-05.pt``,
2048 pool features of a 299 x 299 input on 0..255). Weights are found like the annotators'
(``--weights-dir``, ``$HINTSET_WEIGHTS_DIR``, the Hugging Face cache); without them one line
names the files, and the controllability figures come out as before.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from annotators.weights import WeightsError, resolve_model_dir, weights_dirs

if TYPE_CHECKING:
    from evaluation.run import Run
    from evaluation.samples import Sample

CLIP_MODEL = "openai/clip-vit-base-patch16"
CLIP_FILES = ("vocab.json", "merges.txt")
INCEPTION = "inception-2015-12-05.pt"
#: KID: subsets of this many images (fewer when there are fewer), this many times
KID_SUBSET, KID_SUBSETS = 1000, 100


def clip_scorer(device: str = "cpu") -> Callable[[list[np.ndarray], list[str]], list[float]]:
    """A function (images, captions) -> CLIP scores; WeightsError when the model is missing."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from annotators.caption import PROCESSOR_FILES

    folder = resolve_model_dir(CLIP_MODEL, extra=CLIP_FILES, processor=PROCESSOR_FILES)
    model = CLIPModel.from_pretrained(str(folder)).to(device).eval()
    processor = CLIPProcessor.from_pretrained(str(folder))

    def scores(images: list[np.ndarray], captions: list[str]) -> list[float]:
        images = [np.array(img) for img in images]  # writable copies for torch
        inputs = processor(text=captions, images=images, return_tensors="pt", padding=True,
                           truncation=True).to(device)  # fmt: skip
        with torch.no_grad():
            img = model.get_image_features(pixel_values=inputs["pixel_values"])
            txt = model.get_text_features(input_ids=inputs["input_ids"],
                                          attention_mask=inputs["attention_mask"])  # fmt: skip
        img = torch.nn.functional.normalize(getattr(img, "pooler_output", img), dim=-1)
        txt = torch.nn.functional.normalize(getattr(txt, "pooler_output", txt), dim=-1)
        return (100 * (img * txt).sum(-1).clamp(min=0)).tolist()

    return scores


def inception_features(model: Any, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """2048 pool features per image (resized to 299 x 299 bicubic, 0..255 float)."""
    import torch
    from PIL import Image

    out = []
    for start in range(0, len(images), batch):
        x = np.stack([np.asarray(Image.fromarray(img).resize((299, 299), Image.BICUBIC))
                      for img in images[start : start + batch]])  # fmt: skip
        with torch.no_grad():
            feats = model(torch.from_numpy(x).permute(0, 3, 1, 2).float(), return_features=True)
        out.append(feats.double().numpy())
    return np.concatenate(out)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of two feature sets' Gaussians."""
    from scipy import linalg

    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2, disp=False)[0].real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def kid(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    """Kernel inception distance: unbiased MMD^2 with the cubic polynomial kernel, averaged
    over random subsets (as clean-fid and torchmetrics)."""
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake), KID_SUBSET)
    if n < 2:
        return float("nan")
    d, values = real.shape[1], []
    for _ in range(KID_SUBSETS):
        x = real[rng.choice(len(real), n, replace=False)]
        y = fake[rng.choice(len(fake), n, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values))


def measure(runs: list[Run], samples: list[Sample],
            say: Callable[[str], None] = print) -> tuple[list[str], list[str]]:  # fmt: skip
    """Add ``clip_score`` to each row and FID/KID to each run's ``quality`` when the weights are
    found; return (per-image metrics added, notes). Missing weights: one note line each."""
    from evaluation.run import load_rgb
    from pipeline.decode import decode_image

    added, notes = [], []
    captions = {s.key: s.caption for s in samples}
    try:
        clip = clip_scorer()
    except ImportError:  # a core install: no torch/transformers
        notes.append("CLIP score not computed: needs torch and transformers "
                     "(pip install 'hintset[models]')")  # fmt: skip
    except (WeightsError, OSError, ValueError) as err:
        notes.append(f"CLIP score not computed: {' '.join(str(err).split())}")
    else:
        for run in runs:
            for row in run.rows:
                row["clip_score"] = clip([load_rgb(run.folder / row["file"])],
                                         [captions[row["key"]]])[0]  # fmt: skip
        added.append("clip_score")
    path = next((d / INCEPTION for d in weights_dirs() if (d / INCEPTION).is_file()), None)
    if path is None:
        notes.append(f"FID/KID not computed: missing weights {INCEPTION} (the "
                     "TorchScript Inception-v3 of clean-fid / StyleGAN2-ADA); put it in a "
                     "folder given by --weights-dir or $HINTSET_WEIGHTS_DIR")  # fmt: skip
    elif importlib.util.find_spec("torch") is None:
        notes.append("FID/KID not computed: needs torch (pip install 'hintset[models]')")
    else:
        import torch

        model = torch.jit.load(str(path), map_location="cpu").eval()
        real = inception_features(model, [decode_image(s.image) for s in samples])
        for run in runs:
            fake = inception_features(model, [load_rgb(run.folder / r["file"]) for r in run.rows])
            run.quality = {"fid": fid(real, fake) if len(fake) > 1 else float("nan"),
                           "kid": kid(real, fake), "real_images": len(real),
                           "generated_images": len(fake)}  # fmt: skip
    for note in notes:
        say(note)
    return added, notes
