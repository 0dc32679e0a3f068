"""What an input may make hintset read, and the limits every remote read keeps.

Remote input is untrusted. Two rules live here, once:

- :func:`resolve_row`: a row of a list resolves against that list. Rows of a remote list
  may name remote objects of the list's own family only (http(s) for an http list, the
  same store for s3/gs/az); local paths, ``file:``, other fsspec protocols and chained
  URLs (``simplecache::``) are refused unless the user passed ``--trust-remote-lists``. A local list is the
  user's own file and may name anything, as before.
- :func:`check_address`: a request never reaches a link-local or cloud-metadata address;
  loopback and private addresses only when the sample's ``reach`` allows them (rows of a
  remote list: only the class of address the list itself lives on). Checked on the
  resolved address, at every redirect hop (:mod:`pipeline.fetch` does the requests).

:class:`Limits` are the caps (object size, caption size, timeouts); ``hintset build``
sends them to every worker, which calls :func:`configure` once.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import socket
from dataclasses import dataclass

MIB = 1024 * 1024

#: remote protocols a row of a remote list may use, by family (rows stay in their list's family)
REMOTE_FAMILIES = {"http": "http", "https": "http", "s3": "s3", "s3a": "s3", "gs": "gcs",
                   "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}  # fmt: skip
#: address classes, from most to least trusted; "metadata" is never reachable
PUBLIC, PRIVATE, LOOPBACK, METADATA = "public", "private", "loopback", "metadata"
#: any address but link-local/metadata (inputs the user named, rows of a local list)
ANYWHERE = (PUBLIC, PRIVATE, LOOPBACK)
_METADATA_NETS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"))  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Limits:
    """Caps for reading inputs; plain data sent to every worker."""

    max_object_bytes: int = 256 * MIB  # one remote object (image, sidecar): more fails the sample
    max_caption_bytes: int = 64 * 1024  # one caption, UTF-8 bytes, whatever its source
    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 60.0  # seconds to wait for the next bytes of an answer
    trust_remote_lists: bool = False  # rows of remote lists may name anything a local list may


_limits = Limits()


def configure(limits: Limits) -> None:
    """Use ``limits`` in this process (each worker calls it once with the build's limits)."""
    global _limits
    _limits = limits


def limits() -> Limits:
    """The limits this process reads inputs with."""
    return _limits


class InputRefused(OSError):
    """A rule forbids reading this input; ``str(err)`` is one line naming the rule."""

    def __init__(self, message: str, *pickled: str) -> None:
        # strerror = message: reported as is, no "[Errno]"; (0, message) when unpickled
        super().__init__(0, pickled[0] if pickled else message)

    def __str__(self) -> str:
        return self.strerror


def shorten(text: str, size: int = 120) -> str:
    """``text`` on one line, at most ``size`` characters (for naming an input in an error)."""
    text = " ".join(str(text).split())
    return text if len(text) <= size else text[: size - 3] + "..."


def protocol(url: str) -> str:
    """``s3`` for ``S3://b/k``, ``file`` for ``/x`` and ``x``: the lower-case scheme."""
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def resolve_row(list_url: str, path: str) -> tuple[str, tuple[str, ...]]:
    """(URL to read, address classes it may reach) for the path a list row names.

    InputRefused (one line) if the row may not name that: see the module docstring.
    """
    base = list_url.rsplit("/", 1)[0]
    if "://" not in list_url or list_url.startswith("file://"):  # a local list: the user's own
        return (path if "://" in path or path.startswith("/") else f"{base}/{path}"), ANYWHERE
    family = REMOTE_FAMILIES.get(protocol(list_url))
    if _limits.trust_remote_lists:
        return (path if "://" in path or path.startswith("/") else f"{base}/{path}"), ANYWHERE
    hint = "; --trust-remote-lists allows it if you trust this list"
    if "://" in path:
        scheme = protocol(path)
        if REMOTE_FAMILIES.get(scheme) != family:
            what = ("a local file" if scheme == "file" else "a chained fsspec URL"
                    if "::" in scheme else f"a {shorten(scheme, 20)}:// URL")  # fmt: skip
            raise InputRefused(f"{shorten(path)} is {what}; rows of a remote list may name "
                               f"only {family} URLs like the list itself{hint}")  # fmt: skip
        url = f"{scheme}://{path.split('://', 1)[1]}"
    elif path.startswith(("/", "\\", "~")):
        raise InputRefused(f"{shorten(path)} is a local path; rows of a remote list may name "
                           f"only {family} URLs or paths relative to the list{hint}")  # fmt: skip
    else:
        root, _, folder = base.split("://", 1)[1].partition("/")
        joined = posixpath.normpath(posixpath.join(folder or ".", path))
        if joined == ".." or joined.startswith("../"):
            raise InputRefused(f"{shorten(path)} leaves the store the list is on{hint}")
        url = f"{protocol(base)}://{root}/{joined.lstrip('/')}"
    reach = (PUBLIC,)
    if family == "http":  # and the list's own class of address (a list on a LAN host: LAN rows)
        host = list_url.split("://", 1)[1].split("/", 1)[0]
        reach = tuple(dict.fromkeys((PUBLIC, *_host_classes(host))))
    return url, tuple(c for c in reach if c != METADATA)


@functools.lru_cache(maxsize=64)
def _host_classes(netloc: str) -> tuple[str, ...]:
    """Address classes the host of ``netloc`` (``user@host:port``) resolves to (none if unknown)."""
    from urllib.parse import urlsplit

    host = urlsplit(f"//{netloc}").hostname or ""
    try:
        return tuple(address_class(a) for a in resolve(host, 0))
    except OSError:
        return ()


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (any spelling: names, decimal/hex/octal IPv4, IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def address_class(address: str) -> str:
    """``metadata`` (link-local, cloud metadata), ``loopback``, ``private`` (any non-global
    range) or ``public`` for one IP address; IPv4 embedded in IPv6 counts as that IPv4."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or int(ip) >> 32 == 0) and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # NAT64 or IPv4-compatible
        if embedded is not None:
            ip = embedded
    if any(ip in net for net in _METADATA_NETS if net.version == ip.version) or ip.is_link_local:
        return METADATA
    if ip.is_loopback or ip.is_unspecified or (ip.version == 4 and ip in _THIS_NET):
        return LOOPBACK
    if ip.is_private or not ip.is_global or ip.is_multicast:
        return PRIVATE
    return PUBLIC


_THIS_NET = ipaddress.ip_network("0.0.0.0/8")  # connecting to 0.x reaches this host on Linux


def check_address(host: str, address: str, reach: tuple[str, ...]) -> None:
    """InputRefused if a request for ``host`` may not connect to ``address`` (see module doc)."""
    kind = address_class(address)
    name = address if host.strip("[]") == address else f"{shorten(host, 80)} ({address})"
    if kind == METADATA:
        raise InputRefused(f"{name} is a link-local/cloud-metadata address: never read")
    if kind not in (reach or ANYWHERE):
        raise InputRefused(f"{name} is a {kind} address, and the list "
                           f"naming it is not (rows of a remote list reach {'/'.join(reach)} "
                           "addresses; --trust-remote-lists allows it)")  # fmt: skip


def check_caption(caption: str | None) -> None:
    """ValueError (one line) if ``caption`` is longer than the caption cap (UTF-8 bytes)."""
    cap = _limits.max_caption_bytes
    if caption is not None and len(caption) * 4 > cap:  # only long texts are encoded to count
        if len(caption.encode("utf-8", "surrogatepass")) > cap:
            raise ValueError(f"caption too long: more than {cap:,} bytes (--max-caption-size)")


def too_large(found: str) -> InputRefused:
    """The error for an object over the size cap; ``found`` says what was seen (never its bytes)."""
    return InputRefused(f"object too large: {found}, over the limit of "
                        f"{_limits.max_object_bytes:,} bytes (--max-object-size)")  # fmt: skip
