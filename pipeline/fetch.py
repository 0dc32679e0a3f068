"""HTTP(S) GET of one input object within the rules: checked addresses, redirects, caps, timeouts.

The standard library client, blocking (a worker's I/O threads keep many in flight), so
every step is ours: the host is resolved here and the connection goes to the address that
was checked (:func:`pipeline.trust.check_address`); redirects are followed by hand, at
most :data:`MAX_REDIRECTS`, each hop checked again; reading stops at the size cap, and a
gzip/deflate body is inflated in bounded steps, so neither a huge body nor a
decompression bomb grows a worker past the cap. Errors name what was found, never the
bytes of an answer.
"""

from __future__ import annotations

import errno
import functools
import http.client
import socket
import ssl
import threading
import zlib
from collections.abc import Iterator
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

from pipeline.trust import InputRefused, check_address, limits, resolve, shorten, too_large

MAX_REDIRECTS = 5
CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)


def fetch(url: str, reach: tuple[str, ...] = (), headers: dict[str, str] | None = None,
          head: int = 0) -> bytes:  # fmt: skip
    """The body of ``url`` (http or https), at most the object cap; InputRefused or OSError.

    ``head`` > 0: only the first ``head`` bytes (the rest is not read), no error past them.
    """
    for hop in range(MAX_REDIRECTS + 1):
        try:
            conn, response = _request(url, reach, headers or {})
        except InputRefused as err:  # each hop is checked again, before connecting
            raise InputRefused(f"redirect {hop}: {err}" if hop else str(err)) from None
        done = False
        try:
            status = response.status
            if status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise OSError(f"HTTP {status} redirect without a Location")
                url = urljoin(url, location.strip())
                continue
            phrase = HTTPStatus(status).phrase if status in _KNOWN else ""
            if status in (404, 410):  # as fsspec says it: a missing sidecar is no caption
                raise FileNotFoundError(errno.ENOENT, f"HTTP {status} {phrase}", url)
            if status != 200:
                raise OSError(f"HTTP {status} {phrase}".strip())
            body = _body(response, head)
            done = response.isclosed() and not response.will_close  # all read: reusable
            return body
        finally:
            response.close()
            _release(conn, done)
    raise InputRefused(f"more than {MAX_REDIRECTS} redirects")


_KNOWN = {s.value for s in HTTPStatus}
_pools = threading.local()  # per I/O thread: (scheme, host, port) -> an idle kept-alive connection


def _release(conn: _Connection, reusable: bool) -> None:
    """Keep ``conn`` for the next request to its server, or close it."""
    pool = _pools.__dict__.setdefault("idle", {})
    if not reusable:
        conn.close()
        return
    old = pool.pop(conn.key, None)
    if old is not None:
        old.close()
    pool[conn.key] = conn
    while len(pool) > 8:  # a few servers per thread
        pool.pop(next(iter(pool))).close()


def _request(url: str, reach: tuple[str, ...],
             headers: dict[str, str]) -> tuple[_Connection, http.client.HTTPResponse]:  # fmt: skip
    """Send the GET on a kept-alive or new connection to a checked address; its response."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InputRefused(f"redirected to a {shorten(scheme, 20) or 'relative'}: URL; only "
                           "http(s) is followed")  # fmt: skip
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InputRefused(f"bad port in {shorten(url)}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept-Encoding": "identity", "User-Agent": "hintset", **headers}
    idle = _pools.__dict__.get("idle", {}).pop((scheme, host, port), None)
    if idle is not None:
        try:
            check_address(host, idle.address, reach)  # this request's rule, the address in use
        except InputRefused:
            idle.close()
            raise
        try:
            return idle, idle.get(target, headers)
        except (OSError, http.client.HTTPException):  # the server closed it meanwhile
            idle.close()
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as err:
        raise OSError(f"cannot resolve {shorten(host, 80)}: {err}") from None
    for address in addresses:  # every address the name has: a name may not hide one
        check_address(host, address, reach)
    cap = limits()
    conn = _Connection(scheme, host, port, addresses, cap.connect_timeout)
    try:
        conn.connect()
        conn.sock.settimeout(cap.read_timeout)
        return conn, conn.get(target, headers)
    except TimeoutError:
        conn.close()
        raise OSError(f"{shorten(host, 80)}:{port} did not answer within "
                      f"{cap.connect_timeout:g} s to connect / {cap.read_timeout:g} s to read "
                      "(--connect-timeout, --read-timeout)") from None  # fmt: skip
    except (OSError, http.client.HTTPException) as err:
        conn.close()
        raise OSError(f"{shorten(host, 80)}:{port}: {type(err).__name__} "
                      f"{shorten(getattr(err, 'strerror', None) or err, 80)}") from None  # fmt: skip


class _Connection(http.client.HTTPConnection):
    """A connection to addresses checked beforehand (never a second DNS answer); TLS for https."""

    def __init__(self, scheme: str, host: str, port: int, addresses: list[str],
                 timeout: float) -> None:  # fmt: skip
        super().__init__(host, port, timeout=timeout)
        self.key, self.addresses, self.address = (scheme, host, port), addresses, ""

    def connect(self) -> None:
        error: OSError = OSError(f"{self.host} has no address")
        for address in self.addresses:
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout)
                self.address = address
                break
            except OSError as err:
                error = err
        else:
            raise error
        if self.key[0] == "https":
            self.sock = _tls().wrap_socket(self.sock, server_hostname=self.host)

    def get(self, target: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send a GET for ``target``; the response (headers read, body not yet)."""
        self.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in headers.items():
            self.putheader(name, value)
        self.endheaders()
        return self.getresponse()


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _body(response: http.client.HTTPResponse, head: int = 0) -> bytes:
    """Read the body up to the cap (or ``head`` bytes); inflate gzip/deflate in bounded steps."""
    cap = head or limits().max_object_bytes
    length = response.getheader("Content-Length", "")
    if not head and length.strip().isdigit() and int(length) > cap:
        raise too_large(f"Content-Length {int(length):,} bytes")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    try:
        chunks = iter(lambda: response.read(CHUNK), b"")
        if encoding in ("identity", ""):
            return _capped(chunks, cap, "the body goes on", head > 0)
        if encoding in ("gzip", "x-gzip", "deflate"):
            wbits = zlib.MAX_WBITS | 16 if "gzip" in encoding else zlib.MAX_WBITS | 32
            inflated = _inflate(chunks, zlib.decompressobj(wbits))
            return _capped(inflated, cap, f"its {encoding} Content-Encoding inflates further",
                           head > 0)  # fmt: skip
    except TimeoutError:
        raise OSError(f"no data for {limits().read_timeout:g} s (--read-timeout)") from None
    except zlib.error:
        raise OSError(f"corrupt {encoding} Content-Encoding") from None
    except http.client.HTTPException as err:
        raise OSError(f"HTTP answer broken off ({type(err).__name__})") from None
    name = encoding if encoding.replace("-", "").isalnum() else "unknown"
    raise InputRefused(f"unsupported Content-Encoding {shorten(name, 20)}")


def _inflate(chunks: Iterator[bytes], inflater) -> Iterator[bytes]:
    """Inflated pieces of ``chunks``, at most :data:`CHUNK` bytes each (a bomb never
    inflates more than that at once)."""
    for chunk in chunks:
        data = chunk
        while data:
            yield inflater.decompress(data, CHUNK)
            data = inflater.unconsumed_tail
    yield inflater.flush()


def _capped(chunks: Iterator[bytes], cap: int, found: str, truncate: bool = False) -> bytes:
    """Join ``chunks``; stop reading past ``cap`` bytes: the first ``cap`` if ``truncate``,
    else refuse (``found``: what was seen)."""
    parts, total = [], 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            if truncate:
                parts.append(chunk[: len(chunk) - (total - cap)])
                break
            raise too_large(found)
        parts.append(chunk)
    return b"".join(parts)
