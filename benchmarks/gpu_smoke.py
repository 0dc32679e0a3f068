"""GPU smoke run: build -> train (fp16 and bf16, gradient checkpointing; 2 processes with torchrun
when 2 GPUs exist) -> export -> sample, printing steps/s and peak GPU memory beside diffusers'
examples/controlnet/train_controlnet.py at the same settings.

Run: ``python benchmarks/gpu_smoke.py [--base BASE] [--diffusers-script PATH]``. Without a CUDA
GPU it prints one line and exits 0. BASE defaults to a tiny random SD written here (a smoke
test of the code path); give a real SD 1.5 folder for figures worth comparing. PATH is
diffusers' ``examples/controlnet/train_controlnet.py`` (not in the pip package: clone
diffusers); without it the diffusers column is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import PHOTOS  # noqa: E402

#: runs its target (a module or a script) and prints this process's peak GPU memory at exit
PEAK_WRAPPER = """
import atexit, os, runpy, sys, torch
def report():
    if torch.cuda.is_available():
        mb = torch.cuda.max_memory_allocated() / 2**20
        print(f"PEAK_MB {os.environ.get('RANK', '0')} {mb:.0f}", flush=True)
atexit.register(report)
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def measured(cmd: list[str], processes: int, work: Path) -> dict:
    """Run ``cmd`` (module or script + args) under the peak wrapper, with torchrun when
    ``processes`` > 1; return wall seconds and the largest per-process peak memory."""
    wrapper = work / "peak_wrapper.py"
    wrapper.write_text(PEAK_WRAPPER)
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    done = subprocess.run([*launch, str(wrapper), *cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    peaks = [float(line.split()[2]) for line in done.stdout.splitlines()
             if line.startswith("PEAK_MB")]  # fmt: skip
    return {"seconds": seconds, "peak_mb": max(peaks) if peaks else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="SD 1.x diffusers folder (default: a tiny random one)")
    parser.add_argument("--diffusers-script", default=os.environ.get("DIFFUSERS_TRAIN_CONTROLNET"))
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_smoke: skipped (no CUDA GPU)")
        return 0
    gpus = min(torch.cuda.device_count(), 2)
    work = args.work or Path(tempfile.mkdtemp(prefix="hintset-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    res, steps, batch = str(args.resolution), str(args.steps), str(args.batch_size)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def hintset(*a: str) -> None:
        subprocess.run([sys.executable, "-m", "pipeline", *a], check=True, env=env)

    base = args.base
    if not base:
        base = str(work / "tiny-base")
        hintset("tiny-base", base)
    data = work / "data"
    if not (data / "manifest.json").exists():
        hintset("build", str(PHOTOS), "-o", str(data), "-a", "canny", "--resolution", res, "-q")
    rows = []
    for precision in ("fp16", "bf16"):
        for processes in sorted({1, gpus}):
            run = work / f"run-{precision}-{processes}"
            got = measured(["pipeline", "train", "--data", str(data), "--condition", "canny",
                            "--base-model", base, "--output", str(run), "--resolution", res,
                            "--steps", steps, "--batch-size", batch, "--mixed-precision",
                            precision, "--gradient-checkpointing", "--checkpoint-every", steps,
                            "--report-to", "none"], processes, work)  # fmt: skip
            log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
            loop = [r["samples_per_s"] / (args.batch_size * processes) for r in log[2:]] or [0]
            rows.append(("hintset train", precision, processes, args.steps / got["seconds"],
                         sorted(loop)[len(loop) // 2], got["peak_mb"]))  # fmt: skip
            if args.diffusers_script:
                out = work / f"diffusers-{precision}-{processes}"
                got = measured([args.diffusers_script, "--pretrained_model_name_or_path", base,
                                "--output_dir", str(out), "--train_data_dir", str(data / "shards"),
                                "--image_column", "jpg", "--conditioning_image_column",
                                "canny.png", "--caption_column", "txt", "--resolution", res,
                                "--train_batch_size", batch, "--max_train_steps", steps,
                                "--learning_rate", "1e-5", "--mixed_precision", precision,
                                "--gradient_checkpointing", "--checkpointing_steps", "1000000",
                                "--seed", "0"], processes, work)  # fmt: skip
                rows.append(("diffusers train_controlnet.py", precision, processes,
                             args.steps / got["seconds"], float("nan"), got["peak_mb"]))  # fmt: skip
    export = work / "export"
    hintset("export", str(work / f"run-fp16-1/checkpoint-{steps}"), "-o", str(export))
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        base, controlnet=ControlNetModel.from_pretrained(export / "diffusers"),
        torch_dtype=torch.float16, safety_checker=None, requires_safety_checker=False,
    ).to("cuda")  # fmt: skip
    from training.data import read_samples

    hint = read_samples(str(data), ["canny"], args.resolution, 1)[0]["conditioning"]
    control = Image.fromarray((hint.transpose(1, 2, 0) * 255).astype("uint8"))
    start = time.perf_counter()
    pipe("a photo", image=control, num_inference_steps=20, height=args.resolution,
         width=args.resolution)  # fmt: skip
    sample_s = time.perf_counter() - start
    print(f"\nGPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}; base {base}; "
          f"{args.resolution} px, batch {args.batch_size}/process, {args.steps} steps, "
          "gradient checkpointing\n")  # fmt: skip
    print("| trainer | precision | processes | steps/s (wall) | steps/s (loop) | peak GPU MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, precision, processes, wall, loop, peak in rows:
        print(f"| {name} | {precision} | {processes} | {wall:.2f} | {loop:.2f} | {peak:.0f} |")
    print(f"\nexport -> sample (fp16, DDIM 20 steps): {sample_s:.1f} s per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
