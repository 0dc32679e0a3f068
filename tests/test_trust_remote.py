"""Remote input is untrusted (issue 21, points 1-5 and 11): real HTTP servers and the S3
protocol server on 127.0.0.1 only; link-local addresses are tested by the refusal
happening before any connection, never by traffic."""

from __future__ import annotations

import functools
import gzip
import json
import socket
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import fetch as fetch_module
from pipeline import trust
from pipeline.decode import DecodeError, _reason, decode
from pipeline.fetch import fetch
from pipeline.layout import read_index
from pipeline.reader import read_caption, read_image, read_object
from pipeline.sample_ref import SampleRef
from pipeline.trust import InputRefused, Limits, address_class, resolve_row
from pipeline.units import Unit, iter_unit
from tests.conftest import run_cli
from tests.test_cloud import s3  # noqa: F401 - the moto S3 server fixture

SECRET = "hunter2-internal-token"
MIB = 1024 * 1024


class Handler(SimpleHTTPRequestHandler):
    """Files from a folder, plus the answers an attacker's (or a broken) server gives."""

    requests: list[str]  # set per server: paths asked for
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: as it should
            pass

    def _answer(self) -> None:
        if self.path.startswith("/to/"):  # /to/<url>: redirect there
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.end_headers()
        elif self.path == "/big":  # 5 MiB, with and without a Content-Length
            self._send(b"\0" * (5 * MIB))
        elif self.path == "/big-unsized":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"\0" * MIB)
        elif self.path == "/bomb":  # 5 KB on the wire, 5 MiB inflated
            self._send(gzip.compress(b"\0" * (5 * MIB)), {"Content-Encoding": "gzip"})
        elif self.path.startswith("/gz/"):
            data = (self.directory_path / self.path[4:]).read_bytes()
            self._send(gzip.compress(data), {"Content-Encoding": "gzip"})
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            time.sleep(3)
        elif self.path == "/secret.jpg":  # an internal endpoint's answer
            self._send(f"<!doctype html><p>{SECRET}</p>".encode())
        else:
            super().do_GET()

    def _send(self, data: bytes, headers: dict | None = None) -> None:
        self.send_response(200)
        for name, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def www(tmp_path, photo_paths):
    """An HTTP server on 127.0.0.1 over tmp_path/www (two photos in it); (folder, base URL, log)."""
    folder = tmp_path / "www"
    folder.mkdir()
    for path in photo_paths[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    log: list[str] = []
    handler = type("Logged", (Handler,), {"requests": log})
    handler.directory_path = folder
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}", log
    server.shutdown()
    server.server_close()


@pytest.fixture
def limits():
    """Set this process's limits for one test (restored after)."""
    saved = trust.limits()
    yield lambda **kw: trust.configure(Limits(**kw))
    trust.configure(saved)


def index_rows(out) -> list[dict]:
    return [
        r for p in sorted((out / "index").glob("*.parquet")) for r in read_index(p.read_bytes())
    ]


# -- 1 + 2 + 5: the whole path, through the CLI ----------------------------------------------
def test_remote_list_rows_resolve_against_the_list(tmp_path, www, photo_paths):
    folder, base, _ = www
    victim = tmp_path / "victim.jpg"  # a local file the worker could read
    victim.write_bytes(photo_paths[2].read_bytes())
    ok = [photo_paths[0].name, f"{base}/{photo_paths[1].name}",
          f"{base.replace('http://127.0.0.1', 'HTTP://localhost')}/{photo_paths[0].name}"]  # fmt: skip
    bad = [str(victim), f"file://{victim}", f"FILE://{victim}", f"local://{victim}",
           f"simplecache::file://{victim}", "memory://x", "../../victim.jpg", "s3://bucket/x.jpg"]  # fmt: skip
    rows = [{"url": path, "caption": "fine"} for path in ok + bad]
    rows.append({"url": "secret.jpg", "caption": "html"})
    rows.append({"url": photo_paths[1].name, "caption": "x" * 2000})  # over --max-caption-size
    rows.append({"url": "big", "caption": "big"})  # over --max-object-size
    rows.append({"url": "bomb", "caption": "bomb"})
    pq.write_table(pa.Table.from_pylist(rows), folder / "list.parquet")
    (folder / "one.jsonl").write_text(json.dumps({"url": str(victim)}) + "\n")
    local_list = tmp_path / "local.jsonl"  # the user's own list: local and loopback rows as today
    local_list.write_text(json.dumps({"url": str(victim)}) + "\n"
                          + json.dumps({"url": f"{base}/{photo_paths[0].name}"}) + "\n")  # fmt: skip
    out = tmp_path / "ds"
    proc = run_cli("build", f"{base}/list.parquet", f"{base}/one.jsonl", local_list, "-o", out,
                   "-r", "64", "--shard-size", "100", "-w", "1", "-q", "--max-object-size",
                   "1MiB", "--max-caption-size", "1KiB")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
    got = {(r["source"].split("#")[0].rsplit("/", 1)[-1], r["key"]): r for r in index_rows(out)}
    assert len(got) == len(rows) + 1 + 2
    by_key = {key.split("__")[0] + key[-2:]: r for (_, key), r in got.items()}
    listed = [by_key[f"list{i:02d}"] for i in range(len(rows))]
    assert [r["status"] for r in listed[:3]] == ["ok"] * 3
    for r in listed[3 : 3 + len(bad)]:
        assert r["status"] == "failed", r
        assert "rows of a remote list" in r["error"] or "leaves the store" in r["error"], r
    secret, caption, big, bomb = listed[-4:]
    html = f"<!doctype html><p>{SECRET}</p>"
    assert secret["error"] == f"decode: not an image (text/html, {len(html)} bytes)"
    assert caption["status"] == "failed" and "caption too long" in caption["error"]
    assert "object too large" in big["error"] and "--max-object-size" in big["error"]
    assert "inflates further" in bomb["error"]
    assert by_key["one00"]["status"] == "failed" and "local path" in by_key["one00"]["error"]
    assert [by_key["local00"]["status"], by_key["local01"]["status"]] == ["ok", "ok"]
    shards = b"".join(p.read_bytes() for p in (out / "shards").glob("*.tar"))
    assert SECRET.encode() not in shards and SECRET not in (out / "manifest.json").read_text()
    stored = {m.name.split(".")[0] for p in (out / "shards").glob("*.tar")
              for m in tarfile.open(p).getmembers() if m.name.startswith("list__")}  # fmt: skip
    assert stored == {f"list__{i:09d}" for i in range(3)}  # only the allowed rows were stored

    trust.configure(Limits(trust_remote_lists=True))  # the opt-in: the row is read as asked
    try:
        unit = Unit(id=0, kind="list", url=f"{base}/one.jsonl", ns="one", start=0, stop=1,
                    end=len((folder / "one.jsonl").read_bytes()))  # fmt: skip
        (ref,) = iter_unit(unit)
        assert ref.error == "" and read_image(ref) == victim.read_bytes()
    finally:
        trust.configure(Limits())


def test_row_rule_per_store():
    import pickle

    refused = pickle.loads(pickle.dumps(InputRefused("a rule")))  # crosses process boundaries
    assert str(refused) == "a rule" and isinstance(refused, OSError)
    assert resolve_row("s3://b/lists/l.parquet", "s3://other/x.jpg")[0] == "s3://other/x.jpg"
    assert resolve_row("s3://b/lists/l.parquet", "../img/x.jpg")[0] == "s3://b/img/x.jpg"
    assert resolve_row("S3://b/l.jsonl", "S3A://b/x.jpg")[0] == "s3a://b/x.jpg"
    for path in ("../../x.jpg", "/etc/passwd", "gs://b/x.jpg", "http://h/x.jpg", "file:///x",
                 "memory://x", "data://x", "hf://x/y", "simplecache::s3://b/x", "~/.aws/credentials"):  # fmt: skip
        with pytest.raises(InputRefused, match="--trust-remote-lists"):
            resolve_row("s3://b/lists/l.parquet", path)
    with pytest.raises(InputRefused):
        resolve_row("gs://b/l.csv", "s3://b/x.jpg")
    assert resolve_row("/data/l.csv", "/etc/x.jpg") == ("/etc/x.jpg", trust.ANYWHERE)  # local list
    # an http list on a public address: its rows reach public addresses only
    assert resolve_row("http://93.184.216.34/l.csv", "x.jpg")[1] == (trust.PUBLIC,)
    assert resolve_row("http://127.0.0.1:8/l.csv", "x.jpg")[1] == (trust.PUBLIC, trust.LOOPBACK)


# -- 2: errors never echo fetched bytes -----------------------------------------------------
def test_not_an_image_names_the_type_never_the_bytes():
    for data, kind in ((f"<!DOCTYPE html><b>{SECRET}</b>".encode(), "text/html"),
                       (f'{{"token": "{SECRET}"}}'.encode(), "application/json"),
                       (SECRET.encode(), "text/plain"), (b"\x00\x01" + SECRET.encode(),
                                                          "application/octet-stream")):  # fmt: skip
        with pytest.raises(DecodeError) as err:
            decode(data)
        assert str(err.value) == f"not an image ({kind}, {len(data)} bytes)"
    # decoder messages that quote input bytes (Pillow: "broken PNG file (chunk b'..')")
    assert _reason(SyntaxError(f"broken PNG file (chunk {SECRET.encode()!r})")) == (
        "broken PNG file (chunk <bytes>)"
    )


# -- 3: addresses -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address,kind",
    [("169.254.169.254", "metadata"), ("fe80::1", "metadata"), ("::ffff:169.254.169.254", "metadata"),
     ("::ffff:a9fe:a9fe", "metadata"), ("64:ff9b::a9fe:a9fe", "metadata"), ("2002:a9fe:a9fe::", "metadata"),
     ("fd00:ec2::254", "metadata"), ("127.0.0.1", "loopback"), ("::1", "loopback"),
     ("0.0.0.0", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"),
     ("192.168.0.1", "private"), ("172.16.0.1", "private"), ("fd12::1", "private"),
     ("100.64.0.1", "private"), ("93.184.216.34", "public"), ("2606:2800:220:1::1", "public")],
)  # fmt: skip
def test_address_classes(address, kind):
    assert address_class(address) == kind


@pytest.mark.parametrize("host", ["169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
                                  "[::ffff:169.254.169.254]", "[fe80::1]"])  # fmt: skip
def test_link_local_is_refused_before_connecting(host, monkeypatch):
    connected = []
    monkeypatch.setattr(fetch_module.socket, "create_connection",
                        lambda address, *a: connected.append(address))  # fmt: skip
    with pytest.raises(InputRefused, match="link-local/cloud-metadata address: never read"):
        fetch(f"http://{host}/latest/meta-data/")
    assert connected == []


def test_redirects_are_checked_at_every_hop(www, monkeypatch):
    _, base, log = www
    real = socket.create_connection
    connected = []

    def spy(address, *args, **kwargs):
        connected.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(fetch_module.socket, "create_connection", spy)
    with pytest.raises(InputRefused, match=r"^redirect 1: 169\.254\.169\.254 is a link-local"):
        fetch(f"{base}/to/http://169.254.169.254/latest/meta-data/", (trust.PUBLIC, trust.LOOPBACK))
    with pytest.raises(InputRefused, match="redirect 2: .*only http"):
        fetch(f"{base}/to/{base}/to/file:///etc/passwd")
    assert (
        set(connected) == {"127.0.0.1"} and log[0] == "/to/http://169.254.169.254/latest/meta-data/"
    )
    with pytest.raises(InputRefused, match="more than 5 redirects"):
        fetch(f"{base}/to/" * 7 + f"{base}/x")


def test_private_addresses_only_from_a_list_that_lives_there(www, photo_paths):
    _, base, log = www
    url = f"{base}/{photo_paths[0].name}"
    for host in (url, url.replace("127.0.0.1", "localhost")):  # a name resolving to loopback too
        with pytest.raises(InputRefused, match="loopback address, and the list naming it is not"):
            fetch(host, (trust.PUBLIC,))
    assert log == []  # refused before connecting
    # a list on a public host names a loopback row: the row's reach forbids it
    _, reach = resolve_row("http://93.184.216.34/list.jsonl", url)
    with pytest.raises(InputRefused):
        fetch(url, reach)
    assert fetch(url, (trust.PUBLIC, trust.LOOPBACK)) == photo_paths[0].read_bytes()
    assert log == [f"/{photo_paths[0].name}"]
    with pytest.raises(InputRefused):  # the kept-alive connection is checked for each request
        fetch(url, (trust.PUBLIC,))
    assert len(log) == 1


def test_connections_are_kept_alive(www, photo_paths, monkeypatch):
    _, base, log = www
    real = socket.create_connection
    connected = []
    monkeypatch.setattr(fetch_module.socket, "create_connection",
                        lambda *a, **kw: connected.append(a) or real(*a, **kw))  # fmt: skip
    for path in photo_paths[:2] * 2:
        assert fetch(f"{base}/{path.name}") == path.read_bytes()
    assert len(log) == 4 and len(connected) == 1


def test_missing_http_object_is_file_not_found(www, photo_paths):
    _, base, _ = www
    with pytest.raises(FileNotFoundError, match="HTTP 404 Not Found"):
        fetch(f"{base}/missing.jpg")
    ref = SampleRef(key="a", source="a", url=f"{base}/{photo_paths[0].name}",
                    caption_url=f"{base}/missing.txt")  # fmt: skip
    assert read_caption(ref) is None and read_image(ref) == photo_paths[0].read_bytes()


# -- 4: size caps and timeouts ------------------------------------------------------------------
def test_http_size_cap_stops_reading(www, limits, photo_paths):
    _, base, _ = www
    limits(max_object_bytes=MIB)
    with pytest.raises(
        InputRefused, match="Content-Length 5,242,880 bytes, over the limit of 1,048,576"
    ):
        fetch(f"{base}/big")
    with pytest.raises(InputRefused, match="the body goes on, over the limit"):
        fetch(f"{base}/big-unsized")
    with pytest.raises(InputRefused, match="gzip Content-Encoding inflates further"):
        fetch(f"{base}/bomb")
    assert fetch(f"{base}/gz/{photo_paths[0].name}") == photo_paths[0].read_bytes()


def test_http_read_timeout_fails_the_sample(www, limits):
    _, base, _ = www
    limits(read_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(OSError, match="did not answer|no data for 0.5 s"):
        fetch(f"{base}/slow")
    assert time.monotonic() - start < 2.5


def test_s3_object_size_is_checked_before_reading(s3, limits):  # noqa: F811 - the fixture
    import s3fs

    from pipeline import reader

    reader.filesystem.cache_clear()  # a client of another test's server may be cached
    s3fs.S3FileSystem.clear_instance_cache()
    s3.pipe("bucket/trust/big.jpg", b"\0" * (2 * MIB))
    limits(max_object_bytes=MIB)
    with pytest.raises(InputRefused, match="2,097,152 bytes, over the limit of 1,048,576"):
        read_object("s3://bucket/trust/big.jpg")


# -- 5: captions ----------------------------------------------------------------------------------
def test_caption_cap_for_every_source(tmp_path, limits):
    limits(max_caption_bytes=1024)
    sidecar = tmp_path / "a.txt"
    sidecar.write_bytes(b"y" * (50 * MIB))
    with pytest.raises(
        ValueError, match=r"caption too long: more than 1,024 bytes \(--max-caption-size\)"
    ):
        read_caption(SampleRef(key="a", source="a", caption_url=str(sidecar)))
    with pytest.raises(ValueError, match="caption too long"):  # list rows, tar .txt, --captions
        read_caption(SampleRef(key="a", source="a", caption="\u00e9" * 600))
    assert read_caption(SampleRef(key="a", source="a", caption="\u00e9" * 500)) == "\u00e9" * 500


# -- 11: an output store that does not answer ----------------------------------------------
def test_unreachable_s3_output_is_one_line(tmp_path, photo_paths):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    proc = run_cli("build", photo_paths[0], "-o", "s3://bucket/ds", "-q", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"http://127.0.0.1:{port}" in lines[0], proc.stderr
    assert lines[0].startswith("error: cannot reach the output s3://bucket/ds")


def test_size_options_take_units():
    import click

    from pipeline.commands.options import ByteSize

    sizes = {"1048576": MIB, "64KiB": 65536, "256MiB": 256 * MIB, "2g": 2 << 30, "1.5kb": 1536}
    assert {text: ByteSize().convert(text, None, None) for text in sizes} == sizes
    for bad in ("lots", "0", "MiB"):
        with pytest.raises(click.BadParameter, match="size|at least"):
            ByteSize().convert(bad, None, None)
