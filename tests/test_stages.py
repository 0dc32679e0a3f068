"""The pipelined worker: same bytes as the serial design, failures per sample, memory bounded."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

import tests.plugins  # noqa: F401 - registers test_raises / test_model
from pipeline.engine import WorkerSetup, make_pipeline
from pipeline.layout import read_index
from pipeline.sample_ref import SampleRef
from pipeline.storage import Storage
from pipeline.writers.files import FilesWriter
from pipeline.writers.webdataset import ShardWriter
from tests.corpus import BAD, write_corpus

SPECS_ARGS = ("canny", "test_raises")


@pytest.fixture(scope="module")
def refs(tmp_path_factory, photo_paths) -> list[SampleRef]:
    """The 20 photos, the bad corpus and a missing file, as SampleRefs (one with data in hand)."""
    folder = tmp_path_factory.mktemp("in")
    for path in photo_paths:
        shutil.copy(path, folder / path.name)
    write_corpus(folder / "odd", photo_paths[0])
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out = [SampleRef(key=p.stem, source=str(p), url=str(p), caption=f"c {p.stem}") for p in files]
    out.append(SampleRef(key="missing", source="missing.jpg", url=str(folder / "missing.jpg")))
    out.append(SampleRef(key="inline", source="inline", data=photo_paths[1].read_bytes()))
    return out


#: 2: decode and encode on CPU threads; 1 (no GPU): on the model thread, reads ahead
CPUS = pytest.mark.parametrize("cpus", [2, 1], ids=["cpu-threads", "one-core"])


def setup(serial: bool, cpus: int = 2, **kwargs) -> WorkerSetup:
    from pipeline.worker import AnnotatorSpec

    specs = [AnnotatorSpec("canny"), AnnotatorSpec("test_raises", {"threshold": 120.0})]
    return WorkerSetup(specs, resolution=96, cpus=cpus, batch_size=4, serial=serial, **kwargs)


def build(refs: list[SampleRef], root: Path, serial: bool, cpus: int = 2) -> dict:
    pipeline = make_pipeline(setup(serial, cpus))
    assert pipeline.cpu_threads == (cpus if cpus > 1 else 0)  # no GPU here
    try:
        return pipeline.run(refs, ShardWriter(Storage(str(root)), 0))
    finally:
        pipeline.close()


@CPUS
def test_pipelined_shard_equals_serial_byte_for_byte(refs, tmp_path, cpus):
    serial = build(refs, tmp_path / "serial", serial=True)
    piped = build(refs, tmp_path / "piped", serial=False, cpus=cpus)
    for rel in ("shards/00000.tar", "index/00000.parquet"):
        assert (tmp_path / "serial" / rel).read_bytes() == (tmp_path / "piped" / rel).read_bytes()
    assert serial["tar_sha256"] == piped["tar_sha256"]
    rows = read_index((tmp_path / "piped" / "index" / "00000.parquet").read_bytes())
    assert [r["key"] for r in rows] == [r.key for r in refs]  # input order kept
    status = {r["key"]: (r["status"], r["error"] or "") for r in rows}
    for name, fragment in BAD.items():
        assert status[Path(name).stem][0] == "failed" and fragment in status[Path(name).stem][1]
    assert status["missing"] == ("failed", f"read: No such file or directory: {refs[-2].url}")
    assert any(e.startswith("annotator test_raises") for _, e in status.values())
    assert status["inline"][0] == "ok" and piped["ok"] >= 15


@CPUS
def test_pipelined_files_equal_serial(refs, tmp_path, cpus):
    results = {}
    for serial in (True, False):
        pipeline = make_pipeline(setup(serial, cpus))
        out = tmp_path / str(serial)
        results[serial] = pipeline.run(refs, FilesWriter(out, save_image=True))
        pipeline.close()
    serial_files = {p.relative_to(tmp_path / "True"): p.read_bytes()
                    for p in (tmp_path / "True").rglob("*")}  # fmt: skip
    piped_files = {p.relative_to(tmp_path / "False"): p.read_bytes()
                   for p in (tmp_path / "False").rglob("*")}  # fmt: skip
    assert serial_files == piped_files and len(serial_files) > 30
    strip = [{k: v for k, v in r.items() if k != "timings"} for r in results[True]]
    assert strip == [{k: v for k, v in r.items() if k != "timings"} for r in results[False]]


class CountingWriter(FilesWriter):
    """Tracks how many samples were read but not yet written (the pipeline's memory)."""

    def __init__(self, out: Path, started: list[int]) -> None:
        super().__init__(out)
        self.started, self.written, self.most = started, 0, 0

    def write(self, sample) -> None:
        self.most = max(self.most, self.started[0] - self.written)
        self.written += 1
        super().write(sample)


@CPUS
def test_samples_in_flight_stay_bounded(photo_paths, tmp_path, cpus):
    started = [0]
    lock = threading.Lock()

    def refs():
        for i in range(300):
            with lock:
                started[0] += 1
            yield SampleRef(key=f"k{i}", source="x", data=photo_paths[i % 20].read_bytes())

    pipeline = make_pipeline(setup(False, cpus, io_threads=4))
    writer = CountingWriter(tmp_path, started)
    records = pipeline.run(refs(), writer)
    pipeline.close()
    assert len(records) == 300 and writer.written == 300
    assert writer.most <= pipeline.window + 1  # not 300: the feed waits for the writer


@CPUS
def test_an_error_in_the_unit_iterator_fails_the_unit(photo_paths, tmp_path, cpus):
    def refs():
        yield SampleRef(key="a", source="a", data=photo_paths[0].read_bytes())
        raise OSError("tar truncated")

    pipeline = make_pipeline(setup(False, cpus))
    writer = ShardWriter(Storage(str(tmp_path)), 3)
    with pytest.raises(OSError, match="tar truncated"):
        pipeline.run(refs(), writer)
    pipeline.close()
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "stats").exists()


@pytest.mark.parametrize(("cpus", "device", "threads"),
                         [(1, "cpu", 0), (1, "cuda", 1), (2, "cpu", 2), (3, "cuda", 3)])  # fmt: skip
def test_one_cpu_without_gpu_runs_cpu_work_on_the_model_thread(cpus, device, threads):
    """A 1-CPU worker keeps to one core; with a GPU (or more CPUs) CPU work overlaps the model."""
    from pipeline.worker import AnnotatorSpec

    spec = AnnotatorSpec("test_model", {"ms": 0.0, "device": device})
    pipeline = make_pipeline(WorkerSetup([spec], cpus=cpus))
    try:
        assert pipeline.worker.on_gpu == (device == "cuda")
        assert pipeline.cpu_threads == threads and (pipeline.cpu is None) == (threads == 0)
    finally:
        pipeline.close()
