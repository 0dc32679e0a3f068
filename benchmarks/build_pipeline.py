"""How busy one build worker keeps its model: serial design vs pipelined, local vs slow HTTP inputs.

One worker with 2 CPUs (what ``hintset build --cpus-per-worker 2`` gives each Ray
actor) runs the build's worker path in this process: the pipeline reads, decodes,
resizes to short side 512, runs a stand-in model (``test_model`` from
``tests/plugins.py``: sleeps ``--ms`` per image with the GIL released, as while a GPU
computes), encodes the map (PNG) and the image (JPEG) and writes a WebDataset shard.
Inputs are the test photos, read from local files, or over HTTP from a loopback
server this script starts that waits ``--latency`` ms before each answer (as object
stores do). Each configuration runs N1 and N2 samples; the difference gives the
marginal wall time per sample (start-up and pipeline fill excluded). Model busy =
model time per sample / marginal wall time per sample. Fastest of ``--repeats`` runs.
Run: ``python benchmarks/build_pipeline.py``.
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import PHOTOS  # noqa: E402


def serve(port: int, latency_ms: float) -> None:
    """Serve the test photos on 127.0.0.1:port, each answer delayed by ``latency_ms``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(PHOTOS), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's naming
            time.sleep(latency_ms / 1000)
            super().do_GET()

        def do_HEAD(self):  # noqa: N802
            time.sleep(latency_ms / 1000)
            super().do_HEAD()

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    """The loopback server in its own process (its threads must not share our GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                             "--latency", str(latency_ms)])  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def refs(count: int, base_url: str | None) -> list:
    """``count`` samples cycling over the photos; over HTTP each has its own URL (no caching)."""
    from pipeline.sample_ref import SampleRef

    photos = sorted(PHOTOS.glob("*.jpg"))
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        url = f"{base_url}/{photo.name}?n={i}" if base_url else str(photo)
        out.append(SampleRef(key=f"s{i:06d}", source=url, url=url))
    return out


def run_once(pipeline, count: int, base_url: str | None, folder: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to build one shard of ``count`` samples."""
    from pipeline.storage import Storage
    from pipeline.writers.webdataset import ShardWriter

    cpu, start = time.process_time(), time.perf_counter()
    stats = pipeline.run(refs(count, base_url), ShardWriter(Storage(str(folder)), count))
    assert stats["ok"] == count, stats["failures"]
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=float, default=10.0, help="stand-in model ms per image")
    parser.add_argument("--latency", type=float, default=50.0, help="HTTP ms per object")
    parser.add_argument("--sizes", type=int, nargs=2, default=(100, 300), metavar=("N1", "N2"))
    parser.add_argument("--cpus", type=int, default=2, help="the worker's CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs each; the fastest counts")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return

    import tests.plugins  # noqa: F401 - registers test_model
    from pipeline.engine import WorkerSetup, make_pipeline
    from pipeline.worker import AnnotatorSpec

    specs = [AnnotatorSpec("test_model", {"ms": args.ms})]
    server, base_url = start_server(args.latency)
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for serial in (True, False):
                setup = WorkerSetup(specs, resolution=512, cpus=args.cpus, serial=serial)
                pipeline = make_pipeline(setup)
                for source, url in (("local files", None), (f"HTTP +{args.latency:g} ms", base_url)):  # fmt: skip
                    runs = {n: min(run_once(pipeline, n, url, Path(tmp) / f"{serial}{n}{r}")
                                   for r in range(args.repeats)) for n in args.sizes}  # fmt: skip
                    small, large = args.sizes
                    per_ms, cpu_ms = (1000 * (runs[large][i] - runs[small][i]) / (large - small)
                                      for i in (0, 1))  # fmt: skip
                    rows[("serial" if serial else "pipelined", source)] = (per_ms, cpu_ms)
                pipeline.close()
    finally:
        server.terminate()
    print(f"one worker, {args.cpus} CPU threads, stand-in model {args.ms:g} ms/image, short side "
          f"512, {args.sizes[0]} vs {args.sizes[1]} samples, fastest of {args.repeats}, "
          f"{os.cpu_count()} cores (shared: figures are noisy)\n")  # fmt: skip
    print("| design | input | ms per sample (marginal) | samples/s | model busy | "
          "worker CPU ms per sample |\n| --- | --- | ---: | ---: | ---: | ---: |")  # fmt: skip
    for (design, source), (per_ms, cpu_ms) in rows.items():
        print(f"| {design} | {source} | {per_ms:.1f} | {1000 / per_ms:.1f} | "
              f"{100 * args.ms / per_ms:.0f}% | {cpu_ms:.1f} |")  # fmt: skip
    print(f"\n(worker CPU / {args.cpus} threads below {args.ms:g} ms means the model, not the CPU "
          "work, sets the pace on an idle machine)")  # fmt: skip
    http_key = f"HTTP +{args.latency:g} ms"
    for design in ("serial", "pipelined"):
        ratio = rows[(design, "local files")][0] / rows[(design, http_key)][0]
        print(f"\n{design}: HTTP throughput = {100 * ratio:.0f}% of local files", end="")
    print()


if __name__ == "__main__":
    main()
