"""Inputs and outputs on a real S3 protocol server (moto, 127.0.0.1) and inputs over HTTP.

The S3 client is configured the standard way: AWS_ENDPOINT_URL and the usual AWS
variables, inherited by the CLI subprocess and its Ray workers.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.layout import read_index
from tests.conftest import ROOT, run_cli

FAST = ("--resolution", "64", "--shard-size", "4", "--workers", "1", "-q")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and an s3fs client; the AWS variables point at it.

    Module scope, and other modules import it: moto keeps its buckets in the process, not
    the server, so each module's server starts from moto's reset (an empty store).
    """
    import urllib.request

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset",
                                                  method="POST"), timeout=30).close()  # fmt: skip
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bucket")
    yield fs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def img2dataset_tar(photos, first: int) -> bytes:
    """An img2dataset-style shard: {key}.jpg/.txt/.json per sample."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, path in enumerate(photos):
            key = f"{first + i:09d}"
            meta = json.dumps({"key": key, "url": f"http://example.com/{path.name}"}).encode()
            for ext, data in (("jpg", path.read_bytes()), ("txt", f"tar caption {i}".encode()),
                              ("json", meta)):  # fmt: skip
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3_inputs(s3, photo_paths):
    """A folder with sidecar captions, two img2dataset tars and a Parquet list, all on S3."""
    for path in photo_paths[:5]:
        s3.pipe(f"bucket/in/photos/{path.name}", path.read_bytes())
        s3.pipe(f"bucket/in/photos/{path.stem}.txt", f"sidecar {path.stem}".encode())
    s3.pipe("bucket/in/tars/00000.tar", img2dataset_tar(photo_paths[5:8], 0))
    s3.pipe("bucket/in/tars/00001.tar", img2dataset_tar(photo_paths[8:10], 10000))
    rows = [{"path": f"photos/{p.name}", "caption": f"listed {p.stem}"} for p in photo_paths[:3]]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    s3.pipe("bucket/in/list.parquet", sink.getvalue().to_pybytes())
    return ["s3://bucket/in/photos/", "s3://bucket/in/tars/{00000..00001}.tar",
            "s3://bucket/in/list.parquet"]  # fmt: skip


def s3_index(s3, root: str) -> list[dict]:
    return [row for name in sorted(s3.ls(f"{root}/index")) for row in read_index(s3.cat(name))]


def s3_tars(s3, root: str) -> dict[str, bytes]:
    return {name.rsplit("/", 1)[-1]: s3.cat(name) for name in sorted(s3.ls(f"{root}/shards"))}


def test_build_from_and_to_s3(s3, s3_inputs):
    proc = run_cli("build", *s3_inputs, "-o", "s3://bucket/ds", *FAST)
    assert proc.returncode == 0, proc.stderr
    s3.invalidate_cache()
    rows = s3_index(s3, "bucket/ds")
    assert len(rows) == 5 + 5 + 3 and all(r["status"] == "ok" for r in rows)
    captions = {r["source"].rsplit("/", 1)[-1]: r["caption"] for r in rows}
    assert sum(c.startswith("sidecar ") for c in captions.values()) == 5
    assert sum(r["caption"].startswith("tar caption") for r in rows) == 5
    assert sum(r["caption"].startswith("listed ") for r in rows) == 3
    assert len({r["key"] for r in rows}) == len(rows)
    verify = run_cli("verify", "s3://bucket/ds")
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stderr
    rerun = run_cli("build", *s3_inputs, "-o", "s3://bucket/ds", *FAST)
    assert rerun.returncode == 0 and "5 of 5 shards already complete" in rerun.stdout


def test_kill_9_then_rerun_on_s3_is_byte_identical(s3, s3_inputs, tmp_path):
    args = ("build", *s3_inputs, "-a", "canny,test_slow", "-p", "test_slow.seconds=0.15",
            "--import", "tests.plugins", "--resolution", "64", "--shard-size", "2",
            "--workers", "1", "-q")  # fmt: skip
    assert run_cli(*args, "-o", "s3://bucket/ref").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args, "-o", "s3://bucket/killed"],
                            env=env, start_new_session=True, stderr=log)  # fmt: skip

    def stats_count() -> int:
        s3.invalidate_cache()
        return len(s3.find("bucket/killed/stats/"))

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and stats_count() < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    done = stats_count()
    total = len(s3.ls("bucket/ref/stats"))
    assert 2 <= done < total, (tmp_path / "killed.log").read_text()[-2000:]
    rerun = run_cli(*args, "-o", "s3://bucket/killed")
    assert rerun.returncode == 0, rerun.stderr
    s3.invalidate_cache()
    assert s3_tars(s3, "bucket/killed") == s3_tars(s3, "bucket/ref")
    assert run_cli("verify", "s3://bucket/killed").returncode == 0


def test_http_inputs(tmp_path, photo_paths):
    www = tmp_path / "www"
    (www / "photos").mkdir(parents=True)
    for path in photo_paths[:3]:
        (www / "photos" / path.name).write_bytes(path.read_bytes())
    rows = [{"url": f"photos/{p.name}", "caption": p.stem} for p in photo_paths[:3]]
    rows.append({"url": "photos/missing.jpg", "caption": "gone"})
    pq.write_table(pa.Table.from_pylist(rows), www / "list.parquet")
    (www / "00000.tar").write_bytes(img2dataset_tar(photo_paths[3:5], 0))
    handler = functools.partial(QuietHandler, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    out = tmp_path / "ds"
    try:
        proc = run_cli("build", f"{base}/list.parquet", f"{base}/00000.tar", "-o", out, *FAST)
    finally:
        server.shutdown()
    assert proc.returncode == 1, proc.stderr  # missing.jpg failed: exit 1, the rest is built
    rows = [
        r for p in sorted((out / "index").glob("*.parquet")) for r in read_index(p.read_bytes())
    ]
    status = {r["source"].rsplit("/", 1)[-1]: r["status"] for r in rows}
    assert len(rows) == 6 and status["missing.jpg"] == "failed"
    assert sum(s == "ok" for s in status.values()) == 5
    assert all(r["source"].startswith(base) for r in rows)


def test_storage_options_instead_of_the_endpoint_variable(s3, monkeypatch):
    from pipeline import reader
    from pipeline.commands.build import set_storage_options
    from pipeline.storage import Storage

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    # setenv (not delenv) so the variable set_storage_options writes is removed afterwards
    monkeypatch.setenv("HINTSET_STORAGE_OPTIONS", "")
    set_storage_options((f"s3.endpoint_url={endpoint}", "s3.use_ssl=false"))
    assert json.loads(os.environ["HINTSET_STORAGE_OPTIONS"])["s3"]["use_ssl"] is False
    reader.filesystem.cache_clear()
    try:
        s3.pipe("bucket/opt/x.txt", b"hi")
        assert Storage("s3://bucket/opt").read_bytes("x.txt") == b"hi"
        assert reader.read_url("s3://bucket/opt/x.txt") == b"hi"
    finally:
        reader.filesystem.cache_clear()
