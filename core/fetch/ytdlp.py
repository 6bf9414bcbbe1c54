"""Download one video from a web link with yt-dlp, without letting the link reach private networks.

`fetch_video(url, settings)` downloads a single video (the best format up to a height cap), keeps
its title, uploader, duration, chapters and subtitles, checks the file with `probe_video`, and
remembers it in `<home>/downloads/index.json` so the same link is not downloaded twice.

Server-side request forgery (SSRF) protection
---------------------------------------------
A link typed by a user must not make this machine fetch from itself, its private network or the
cloud metadata service. `check_url` refuses anything but plain http(s) links to hosts whose every
address is public. That alone would not be enough: yt-dlp follows redirects, reads URLs out of
pages and manifests, and resolves host names again when it connects (a DNS answer can change in
between: "DNS rebinding"). So yt-dlp is given exactly one network request handler, `_GuardedRH`,
and no other (no proxies, no file:, data:, ftp: or websocket URLs). Its connection step resolves the
host, checks every address it got, and connects to one of those very addresses (the check and the
connection use the same answer, so nothing can change in between). Redirects are checked as they
come, and are checked again when their connection is opened. Downloads must use yt-dlp's native
downloaders (which send every request through that handler); FFmpeg is used only to merge and fix
local files, with its network protocols turned off, and only after the files were sniffed to be
media (not a playlist or a script that could make FFmpeg open other files or URLs).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import http.client
import io
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import (
    CertificateVerifyError,
    HTTPError,
    IncompleteRead,
    RequestError,
    SSLError,
    TransportError,
)
from yt_dlp.utils import DownloadCancelled, YoutubeDLError
from yt_dlp.utils.networking import normalize_url

from core.errors import AccessDenied, ConfigError, MediaError
from core.media import VideoLimits, probe_video, write_atomic

Progress = Callable[[int, int | None, str], None]

INDEX_NAME = "index.json"
MAX_URL_LENGTH = 4096
MAX_REDIRECTS = 10
PAGE_CAP = 64 * 1024 * 1024  # a web page, manifest or API answer is never larger than this
SUBTITLE_CAP = 20 * 1024 * 1024  # subtitle files are read up to this size
STOPPED = "the download was stopped before it finished; nothing was kept"

# Where the settings come from, for messages.
_ENV = {
    "fetch_allowed_hosts": "FRAMESCOPE_FETCH_HOSTS",
    "fetch_max_mb": "FRAMESCOPE_FETCH_MAX_MB",
    "fetch_max_minutes": "FRAMESCOPE_FETCH_MAX_MINUTES",
    "fetch_max_height": "FRAMESCOPE_FETCH_MAX_HEIGHT",
    "fetch_timeout": "FRAMESCOPE_FETCH_TIMEOUT",
}


@dataclass(frozen=True)
class FetchedVideo:
    """A downloaded video and what its page said about it."""

    url: str  # the link as checked and normalised by check_url
    path: Path
    title: str
    uploader: str | None
    duration: float | None  # seconds
    chapters: tuple[dict, ...]  # {"start": s, "end": s, "title": str}
    subtitles: str | None  # plain text of the manual or automatic subtitles (English preferred)
    cues: tuple[tuple[float, float, str], ...]  # the same subtitles as (start, end, text)
    extractor: str  # yt-dlp's extractor, e.g. "Youtube" or "Generic"


# =============================================================================================
# Settings
# =============================================================================================


@dataclass(frozen=True)
class _Options:
    home: Path
    allowed_hosts: tuple[str, ...]
    max_bytes: int
    max_seconds: float
    max_height: int
    timeout: float
    allow_loopback: bool
    max_pixels: int


def _number(settings: Any, name: str, default: float, minimum: float) -> float:
    value = getattr(settings, name, default)
    if value is None:
        value = default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{_ENV.get(name, name)}={value!r} is not a number") from None
    if not number >= minimum or number != number or number == float("inf"):
        raise ConfigError(f"{_ENV.get(name, name)}={value!r} must be at least {minimum:g}")
    return number


def _options(settings: Any) -> _Options:
    home = getattr(settings, "home", None)
    if home is None:
        raise ConfigError("the settings name no data directory (FRAMESCOPE_HOME)")
    hosts = getattr(settings, "fetch_allowed_hosts", ()) or ()
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    allowed = tuple(_allowlist_entry(str(h)) for h in hosts if str(h).strip())
    max_mb = _number(settings, "fetch_max_mb", 2048, 0.001)
    max_minutes = _number(settings, "fetch_max_minutes", 240, 0.01)
    general_seconds = getattr(settings, "max_video_seconds", None)
    max_seconds = max_minutes * 60.0
    if isinstance(general_seconds, (int, float)) and general_seconds > 0:
        max_seconds = min(max_seconds, float(general_seconds))
    max_bytes = int(max_mb * 1024 * 1024)
    general_bytes = getattr(settings, "max_video_bytes", None)
    if isinstance(general_bytes, int) and general_bytes > 0:
        max_bytes = min(max_bytes, general_bytes)
    pixels = getattr(settings, "max_video_pixels", None)
    return _Options(
        home=Path(home),
        allowed_hosts=allowed,
        max_bytes=max_bytes,
        max_seconds=max_seconds,
        max_height=int(_number(settings, "fetch_max_height", 720, 1)),
        timeout=_number(settings, "fetch_timeout", 60, 0.1),
        # only an explicit True turns it on: a stray string such as "0" must not
        allow_loopback=getattr(settings, "fetch_allow_loopback", False) is True,
        max_pixels=pixels if isinstance(pixels, int) and pixels > 0 else VideoLimits.max_pixels,
    )


def _allowlist_entry(raw: str) -> str:
    entry = raw.strip().lower()
    if entry.startswith("*."):
        entry = entry[2:]
    entry = entry.strip(".")
    try:
        host, _ = _parse_host(entry)
    except _Refusal as exc:
        raise ConfigError(
            f"FRAMESCOPE_FETCH_HOSTS: {raw.strip()!r} is not a host name ({exc})"
        ) from None
    return host


def _describe_size(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{int(n)} bytes"


def _describe_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


# =============================================================================================
# Addresses and URLs
# =============================================================================================


class _Refusal(OSError):
    """A host or address that may not be contacted (an OSError so that urllib passes it on)."""


class _Unresolved(_Refusal):
    """A host name without an address: an error, but not one the policy caused."""


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def _address_problem(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool
) -> str | None:
    """Why an address may not be contacted, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "an IPv6 address with a zone (a local interface)"
        if ip.ipv4_mapped is not None:
            problem = _address_problem(ip.ipv4_mapped, allow_loopback)
            return f"{problem} ({ip.ipv4_mapped} written as IPv6)" if problem else None
        embedded = None
        if any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            problem = _address_problem(embedded, False)
            if problem:
                return f"{problem}, embedded in an IPv6 address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address (this machine)"
    if ip.is_unspecified:
        return "the unspecified address (this machine)"
    if ip.is_link_local:
        return "a link-local address (such as the cloud metadata service 169.254.169.254)"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if ip.is_private:
        return "a private-network address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public internet address"
    return None


def _parse_host(host: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """The host in canonical ASCII form and its address when it is an IP literal, or _Refusal."""
    if not host:
        raise _Refusal("the link names no host")
    if "%" in host:
        raise _Refusal(f"the host {host} names a network interface (IPv6 zone)")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise _Refusal(f"{host} is not a valid IPv6 address") from None
        return address.compressed, address
    name = host.rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise _Refusal(f"the host {host!r} is not a valid host name") from None
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # no top-level domain is numeric, so this is an IPv4 address and must be written as one
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            address = None
        if address is None or str(address) != name:
            raise _Refusal(
                f"the host {host} is a number in a non-standard form (decimal, octal, hex or "
                "shortened IPv4); write the address as four decimal parts"
            )
        return name, address
    if not all(_LABEL.match(label) for label in labels) or len(name) > 253:
        raise _Refusal(f"the host {host!r} is not a valid host name")
    return name, None


def _checked_addresses(host: str, port: int, allow_loopback: bool) -> list[tuple]:
    """getaddrinfo results for host:port, all of them public, or _Refusal saying which is not."""
    name, literal = _parse_host(host)
    try:
        flags = socket.AI_NUMERICHOST if literal is not None else 0
        infos = socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM, 0, flags)
    except socket.gaierror as exc:
        raise _Unresolved(f"the host {name} cannot be resolved ({exc.strerror or exc})") from None
    except (UnicodeError, OSError) as exc:
        raise _Unresolved(f"the host {name} cannot be resolved ({exc})") from None
    usable = []
    for info in infos:
        family, sockaddr = info[0], info[4]
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise _Refusal(
                f"the host {name} resolves to {sockaddr[0]!r}, which is not an IP address"
            ) from None
        problem = _address_problem(ip, allow_loopback)
        if problem:
            said = f"{ip} is" if literal is not None else f"the host {name} resolves to {ip},"
            raise _Refusal(f"{said} {problem}; only public internet addresses may be fetched")
        usable.append(info)
    if not usable:
        raise _Unresolved(f"the host {name} has no IPv4 or IPv6 address")
    return usable


def _connect_socket(
    family: int, socktype: int, proto: int, sockaddr: tuple, timeout: float
) -> socket.socket:
    """Open a TCP connection to an address that was already checked (a seam for tests)."""
    sock = socket.socket(family, socktype, proto)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        return sock
    except BaseException:
        sock.close()
        raise


def _split_url(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    """Parse an http(s) link: (parts, canonical host, port), or _Refusal."""
    if not isinstance(url, str) or not url.strip():
        raise _Refusal("the link is empty")
    if len(url) > MAX_URL_LENGTH:
        raise _Refusal(f"the link is longer than {MAX_URL_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in url.strip()):
        raise _Refusal("the link contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as exc:
        raise _Refusal(f"the link cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme or (scheme not in ("http", "https") and not parts.netloc):
        if re.match(
            r"^[a-z][a-z0-9+.-]*:", url.strip(), re.I
        ) and not url.strip().lower().startswith(("http:", "https:")):
            raise _Refusal(f"only http:// and https:// links can be fetched, not {scheme}:")
        raise _Refusal("not a web link: it does not start with http:// or https://")
    if scheme not in ("http", "https"):
        raise _Refusal(f"only http:// and https:// links can be fetched, not {scheme}:")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise _Refusal("links with a user name or password in them are refused")
    if "\\" in parts.netloc:
        raise _Refusal("the link's host part contains a backslash")
    try:
        port = parts.port
    except ValueError:
        raise _Refusal("the link's port is not a number between 1 and 65535") from None
    host, _ = _parse_host(parts.hostname or "")
    if port == 0:
        raise _Refusal("port 0 cannot be connected to")
    return parts, host, port or (443 if scheme == "https" else 80)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    return not allowed or any(host == a or host.endswith("." + a) for a in allowed)


def check_url(url: str, settings: Any) -> str:
    """The link, normalised, if it may be fetched; MediaError (or AccessDenied) saying why not.

    Only http(s) links without credentials whose host resolves to public addresses only are
    accepted; with FRAMESCOPE_FETCH_HOSTS set the host must be one of those (or a subdomain).
    """
    opts = _options(settings)
    clean, host, port = _normalize(url, opts)
    _check_resolution(url, host, port, opts)
    return clean


def _normalize(url: str, opts: _Options) -> tuple[str, str, int]:
    """(normalised link, host, port) when the link's form and host are allowed (no DNS yet)."""
    label = url.strip()[:300] if isinstance(url, str) and url.strip() else "(empty link)"
    try:
        parts, host, port = _split_url(url)
    except _Refusal as exc:
        raise MediaError(label, str(exc)) from None
    if not _host_allowed(host, opts.allowed_hosts):
        raise AccessDenied(
            f"{label}: the host {host} is not one this deployment fetches from "
            f"(FRAMESCOPE_FETCH_HOSTS: {', '.join(opts.allowed_hosts)})"
        )
    scheme = parts.scheme.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        netloc += f":{port}"
    clean = urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return clean, host, port


def _check_resolution(url: str, host: str, port: int, opts: _Options) -> None:
    try:
        _checked_addresses(host, port, opts.allow_loopback)
    except _Refusal as exc:
        raise MediaError(url.strip()[:300], str(exc)) from None


# =============================================================================================
# The guard: one per fetch, shared by the network handler, the hooks and fetch_video
# =============================================================================================


class _Abort(DownloadCancelled):
    """Stops yt-dlp: the reason is in the guard (yt-dlp passes DownloadCancelled on unchanged)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Guard:
    """What one fetch may do, and the first reason it had to stop."""

    def __init__(self, opts: _Options, should_stop: Callable[[], bool]) -> None:
        self.opts = opts
        self._should_stop = should_stop
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.received = 0  # bytes read through the handler, all responses
        self.budget = 2 * opts.max_bytes + 256 * 1024 * 1024
        self._responses: list[Any] = []

    def fail(self, reason: str) -> str:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            return self.reason

    def problem(self) -> str | None:
        """Why the fetch must end now (stopped, or already failed), or None."""
        if self.reason is None and self._should_stop():
            self.fail(STOPPED)
        return self.reason

    def check(self) -> None:
        """Raise _Abort when the fetch was stopped or already failed."""
        if self.problem() is not None:
            raise _Abort(self.reason)

    def connect(
        self,
        address: tuple,
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
        source_address: Any = None,
    ) -> socket.socket:
        """http.client's connection step: resolve, check every address, connect to a checked one."""
        host, port = address[0], address[1]
        try:
            self.check()
        except _Abort as exc:
            raise _Refusal(exc.reason) from None
        try:
            infos = _checked_addresses(str(host), int(port), self.opts.allow_loopback)
        except _Unresolved as exc:
            raise OSError(str(exc)) from None  # yt-dlp reports it (or tries another source)
        except _Refusal as exc:
            raise _Refusal(self.fail(f"refused to connect: {exc}")) from None
        if timeout is socket._GLOBAL_DEFAULT_TIMEOUT or timeout is None:
            timeout = self.opts.timeout
        error: OSError | None = None
        for family, socktype, proto, _, sockaddr in infos:
            try:
                return _connect_socket(family, socktype, proto, sockaddr, timeout)
            except OSError as exc:
                error = exc
        raise error or OSError(f"cannot connect to {host}")

    def check_redirect(self, old: str, new: str) -> None:
        try:
            _, host, port = _split_url(new)
            _checked_addresses(host, port, self.opts.allow_loopback)
        except _Unresolved:
            return  # the connection fails on its own
        except _Refusal as exc:
            raise _Refusal(
                self.fail(f"refused to follow a redirect to {new[:300]}: {exc}")
            ) from None

    def track(self, response: Any) -> None:
        with self._lock:
            self._responses.append(response)

    def count(self, n: int) -> None:
        with self._lock:
            self.received += n
            over = self.received > self.budget
        if over:
            raise _Abort(
                self.fail(
                    f"more than {_describe_size(self.budget)} was received in all; the download was stopped"
                )
            )

    def close(self) -> None:
        with self._lock:
            responses, self._responses = self._responses, []
        for response in responses:
            with contextlib.suppress(Exception):
                response.close()


# =============================================================================================
# yt-dlp's only request handler
# =============================================================================================

_TEXT_MARKERS = ("text/", "json", "xml", "javascript", "mpegurl", "html")


class _Decoded:
    """A response body with gzip or deflate content-encoding, decoded as it is read."""

    def __init__(self, raw: Any, encoding: str) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(
            zlib.MAX_WBITS | 32 if encoding == "gzip" else zlib.MAX_WBITS
        )
        self._pending = b""
        self._raw_done = False
        self._deflate = encoding == "deflate"
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        amt = amt or 1 << 16
        out = b""
        while len(out) < amt:
            if self._pending:
                data, self._pending = self._pending, b""
            elif self._raw_done:
                break
            else:
                data = self._raw.read(1 << 16)
                if not data:
                    self._raw_done = True
                    out += self._inflater.flush()
                    break
            try:
                out += self._inflater.decompress(data, amt - len(out))
            except zlib.error:
                if self._deflate and not out:  # a raw deflate stream without the zlib header
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._deflate = False
                    out += self._inflater.decompress(data, amt - len(out))
                else:
                    raise
            self._pending = self._inflater.unconsumed_tail
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True
        self._raw.close()


class _GuardedResponse(Response):
    """A response whose reads are counted, capped and stoppable."""

    def __init__(self, raw: Any, url: str, guard: _Guard) -> None:
        headers = raw.headers
        content_type = (headers.get("Content-Type") or "").lower().strip()
        self._cap = (
            min(PAGE_CAP, guard.opts.max_bytes)
            if any(m in content_type for m in _TEXT_MARKERS)
            else guard.opts.max_bytes + (1 << 20)
        )
        self._guard = guard
        self._read = 0
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        fp = _Decoded(raw, encoding) if encoding in ("gzip", "x-gzip", "deflate") else raw
        super().__init__(
            fp=fp, url=url, headers=headers, status=raw.status, reason=getattr(raw, "reason", None)
        )
        guard.track(self)

    def read(self, amt: int | None = None) -> bytes:
        if self.closed:
            return b""
        if amt is None or amt < 0:
            chunks = []
            while chunk := self.read(1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        self._guard.check()
        try:
            data = self.fp.read(amt)
        except http.client.IncompleteRead as exc:
            raise IncompleteRead(
                partial=len(exc.partial), expected=exc.expected, cause=exc
            ) from exc
        except ssl.SSLError as exc:
            raise SSLError(cause=exc) from exc
        except (OSError, EOFError, http.client.HTTPException, zlib.error) as exc:
            raise TransportError(cause=exc) from exc
        self._read += len(data)
        if self._read > self._cap:
            self.close()
            raise _Abort(
                self._guard.fail(
                    f"the server sent more than {_describe_size(self._cap)} for one request "
                    f"(the cap is FRAMESCOPE_FETCH_MAX_MB); the partial file was removed"
                )
            )
        self._guard.count(len(data))
        if not data:
            self.close()
        return data


class _PinnedHTTPHandler(urllib.request.AbstractHTTPHandler):
    """http and https through connections whose socket comes from the guard."""

    def __init__(self, guard: _Guard, context: ssl.SSLContext) -> None:
        super().__init__()
        self._guard = guard
        self._context = context

    def _factory(
        self, base: type[http.client.HTTPConnection]
    ) -> Callable[..., http.client.HTTPConnection]:
        guard = self._guard

        def build(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            connection = base(host, **kwargs)
            # http.client opens its socket through this attribute; HTTPS then wraps that socket
            # with the original host name, so certificates are still checked against it.
            connection._create_connection = guard.connect
            return connection

        return build

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory(http.client.HTTPConnection), req)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory(http.client.HTTPSConnection), req, context=self._context)

    http_request = urllib.request.AbstractHTTPHandler.do_request_
    https_request = urllib.request.AbstractHTTPHandler.do_request_


class _GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if code not in (301, 302, 303, 307, 308):
            return None
        self._guard.check_redirect(req.full_url, newurl)
        method = req.get_method()
        if (code == 303 and method != "HEAD") or (code in (301, 302) and method == "POST"):
            method = "GET"
        data = req.data if method == req.get_method() else None
        dropped = {"cookie", "authorization", "host"}
        if data is None:
            dropped |= {"content-length", "content-type"}
        new_headers = {k: v for k, v in req.headers.items() if k.lower() not in dropped}
        return urllib.request.Request(
            newurl,
            data=data,
            headers=new_headers,
            method=method,
            origin_req_host=req.origin_req_host,
            unverifiable=True,
        )

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = (
        urllib.request.HTTPRedirectHandler.http_error_302
    )


class _GuardedRH(RequestHandler):
    """yt-dlp's only request handler in a fetch: http(s) through the guard, nothing else."""

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = ()  # any proxy makes the request unsupported: it would skip the checks
    _SUPPORTED_FEATURES = ()
    guard: _Guard | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def _check_extensions(self, extensions: dict) -> None:
        super()._check_extensions(extensions)
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _prepare_headers(self, request: Any, headers: Any) -> None:
        headers["Accept-Encoding"] = "identity"

    def _context(self, legacy: bool | None) -> ssl.SSLContext:
        key = bool(legacy)
        if key not in self._contexts:
            self._contexts[key] = self._make_sslcontext(legacy_ssl_support=key)
        return self._contexts[key]

    def _send(self, request: Any) -> Response:
        guard = self.guard
        if guard is None:
            raise RequestError("no guard configured for this fetch")
        reason = guard.problem()
        if reason is not None:  # RequestError: anything else is reported as a yt-dlp bug
            raise TransportError(reason)
        opener = urllib.request.OpenerDirector()
        for handler in (
            _PinnedHTTPHandler(guard, self._context(request.extensions.get("legacy_ssl"))),
            urllib.request.HTTPCookieProcessor(self._get_cookiejar(request)),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _GuardedRedirectHandler(guard),
            urllib.request.UnknownHandler(),
        ):
            opener.add_handler(handler)
        opener.addheaders = []
        urllib_request = urllib.request.Request(
            normalize_url(request.url),
            data=request.data,
            headers=self._get_headers(request),
            method=request.method,
        )
        try:
            raw = opener.open(urllib_request, timeout=self._calculate_timeout(request))
        except urllib.error.HTTPError as exc:
            body = b""
            try:
                body = exc.read(1 << 20) or b""
            except Exception:
                pass
            finally:
                exc.close()
            response = Response(
                fp=io.BytesIO(body),
                url=exc.url or request.url,
                headers=exc.headers or {},
                status=exc.code,
                reason=exc.reason if isinstance(exc.reason, str) else None,
            )
            raise HTTPError(response, redirect_loop="redirect error" in str(exc)) from None
        except urllib.error.URLError as exc:
            cause = exc.reason
            if isinstance(cause, _Refusal):
                raise TransportError(str(cause)) from None
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise CertificateVerifyError(cause=cause) from None
            if isinstance(cause, ssl.SSLError):
                raise SSLError(cause=cause) from None
            raise TransportError(cause=exc) from None
        except _Refusal as exc:
            raise TransportError(str(exc)) from None
        except (http.client.InvalidURL, ValueError) as exc:
            raise RequestError(cause=exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(cause=exc) from None
        return _GuardedResponse(raw, raw.url, guard)


# =============================================================================================
# yt-dlp itself
# =============================================================================================

_NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD)

# The first bytes of the files FFmpeg may be run on (merging and fixing downloads).
_MEDIA_MAGIC = (
    (4, (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp", b"sidx", b"moof")),
    (0, (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"ID3", b"fLaC")),
)
# FFmpeg options for every input it reads: local files only, and only plain media demuxers
# (no playlists, concat scripts or SDP files that would name other files or URLs).
_FFMPEG_INPUT = [
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,flv,ogg,mp3,aac,wav,flac",
]


def _looks_like_media(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 8:
        return False
    for offset, magics in _MEDIA_MAGIC:
        if any(head[offset:].startswith(m) for m in magics):
            return True
    if head[0] == 0x47:  # MPEG-TS sync byte (native HLS downloads)
        return True
    return head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MPEG audio / ADTS


class _GuardedYDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only network access is _GuardedRH and whose downloads are all native."""

    def __init__(self, params: dict, guard: _Guard) -> None:
        self._fetch_guard = guard
        super().__init__(params)

    @functools.cached_property
    def _request_director(self):  # replaces yt-dlp's list of handlers with ours
        director = self.build_request_director([_GuardedRH])
        for handler in director.handlers.values():
            handler.guard = self._fetch_guard
        return director

    def dl(self, name, info, subtitle=False, test=False):
        self._fetch_guard.check()
        downloader = get_suitable_downloader(info, self.params, to_stdout=(name == "-"))
        if name == "-" or downloader not in _NATIVE_DOWNLOADERS:
            protocol = info.get("protocol") or "unknown"
            raise _Abort(
                self._fetch_guard.fail(
                    f"this video needs a downloader ({getattr(downloader, '__name__', downloader)}, "
                    f"protocol {protocol}) that would bypass the network checks; it is not fetched"
                )
            )
        return super().dl(name, info, subtitle=subtitle, test=test)

    def post_process(self, filename, info, files_to_move=None):
        # FFmpeg runs next (merging, fixups): it only ever gets files that look like media.
        for path in info.get("__files_to_merge") or [filename]:
            if os.path.exists(path) and not _looks_like_media(Path(path)):
                raise _Abort(
                    self._fetch_guard.fail(
                        "the server sent something that is not a video file (a web page, playlist or script?)"
                    )
                )
        return super().post_process(filename, info, files_to_move)


class _Log:
    """yt-dlp's messages, kept for error reports instead of printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, msg: str) -> None:
        if len(self.lines) < 500:
            self.lines.append(str(msg))

    debug = info = warning = error = _keep


def _short(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    text = re.sub(r"^(?:ERROR:\s*)+", "", text)
    text = re.sub(r"^\[[\w:]+\]\s*(?:[\w.-]+:\s*)?", "", text)
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.split(r" \(caused by |; please report this issue", first)[0]
    return first[:300]


def _format_selector(height: int) -> str:
    # the best up to the cap; when every format is taller, the smallest one
    return f"bv*[height<=?{height}]+ba/b[height<=?{height}]/wv*+ba/w"


# =============================================================================================
# Subtitles
# =============================================================================================

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_vtt(text: str) -> tuple[tuple[float, float, str], ...]:
    """(start, end, text) cues of a WebVTT (or SRT) file, tags removed.

    Automatic captions repeat the previous cue's line in each cue (rolling captions); a line that
    was in the previous cue is not repeated.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[tuple[float, float, str]] = []
    previous: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.split("\n")
        at = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if at is None:
            continue
        match = _CUE_TIMING.match(lines[at])
        if not match:
            continue
        start = _seconds(*match.group(1, 2, 3, 4))
        end = _seconds(*match.group(5, 6, 7, 8))
        body = []
        for line in lines[at + 1 :]:
            clean = " ".join(html.unescape(_TAG.sub("", line)).split())
            if clean:
                body.append(clean)
        new = [line for line in body if line not in previous]
        previous = body
        if new and end >= start:
            cues.append((start, end, " ".join(new)))
    return tuple(cues)


def _pick_subtitle_language(info: dict) -> str | None:
    """English manual subtitles, else English automatic captions, else other manual subtitles."""

    def languages(pool: Any) -> list[str]:
        if not isinstance(pool, dict):
            return []
        return [
            lang
            for lang, tracks in pool.items()
            if lang != "live_chat"
            and isinstance(tracks, list)
            and any(isinstance(t, dict) and t.get("ext") == "vtt" for t in tracks)
        ]

    manual, automatic = languages(info.get("subtitles")), languages(info.get("automatic_captions"))
    for pool in (manual, automatic):
        for wanted in ("en", "en-orig"):
            if wanted in pool:
                return wanted
        english = sorted(lang for lang in pool if lang.lower().startswith("en"))
        if english:
            return english[0]
    if manual:
        return manual[0]
    original = [lang for lang in automatic if lang.endswith("-orig")]
    if original:
        return original[0]
    language = info.get("language")
    return language if language in automatic else None


# =============================================================================================
# The download index
# =============================================================================================

_INDEX_LOCK = threading.Lock()
_URL_LOCKS: dict[str, threading.Lock] = {}
_URL_LOCKS_GUARD = threading.Lock()


def _url_lock(url: str) -> threading.Lock:
    with _URL_LOCKS_GUARD:
        return _URL_LOCKS.setdefault(url, threading.Lock())


def _read_index(folder: Path) -> dict:
    try:
        data = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": 1, "items": {}, "ids": {}}
    if not isinstance(data, dict) or not isinstance(data.get("items"), dict):
        return {"version": 1, "items": {}, "ids": {}}
    data.setdefault("ids", {})
    return data


def _from_entry(url: str, entry: dict, folder: Path) -> FetchedVideo | None:
    try:
        name = str(entry["file"])
        if Path(name).name != name or name.startswith("."):
            return None
        path = folder / name
        if not path.is_file() or path.stat().st_size != int(entry.get("size", -1)):
            return None
        return FetchedVideo(
            url=url,
            path=path,
            title=str(entry.get("title") or path.stem),
            uploader=entry.get("uploader"),
            duration=entry.get("duration"),
            chapters=tuple(dict(c) for c in entry.get("chapters") or ()),
            subtitles=entry.get("subtitles"),
            cues=tuple((float(s), float(e), str(t)) for s, e, t in entry.get("cues") or ()),
            extractor=str(entry.get("extractor") or ""),
        )
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _cached(folder: Path, url: str, key: str | None = None) -> FetchedVideo | None:
    with _INDEX_LOCK:
        index = _read_index(folder)
    entry = index["items"].get(url)
    if entry is None and key is not None:
        original = index["ids"].get(key)
        entry = index["items"].get(original) if original else None
    return _from_entry(url, entry, folder) if isinstance(entry, dict) else None


def _remember(folder: Path, video: FetchedVideo, key: str | None) -> None:
    entry = {
        "file": video.path.name,
        "size": video.path.stat().st_size,
        "title": video.title,
        "uploader": video.uploader,
        "duration": video.duration,
        "chapters": list(video.chapters),
        "subtitles": video.subtitles,
        "cues": [list(c) for c in video.cues],
        "extractor": video.extractor,
        "key": key,
        "fetched": time.time(),
    }
    with _INDEX_LOCK:
        index = _read_index(folder)
        index["items"][video.url] = entry
        if key:
            index["ids"][key] = video.url
        write_atomic(
            folder / INDEX_NAME, json.dumps(index, ensure_ascii=False, indent=1).encode("utf-8")
        )


def _file_name(info: dict, url: str, ext: str) -> str:
    def slug(value: Any, limit: int) -> str:
        text = unicodedata.normalize("NFKD", str(value or "")).encode("ascii", "ignore").decode()
        return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:limit] or "video"

    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    ext = ext if re.fullmatch(r"[a-z0-9]{1,5}", ext or "") else "mp4"
    return f"{slug(info.get('extractor_key'), 20)}-{slug(info.get('id'), 60)}-{digest}.{ext}"


# =============================================================================================
# fetch_video
# =============================================================================================


def _single_video(url: str, info: Any) -> dict:
    if not isinstance(info, dict):
        raise MediaError(url, "no video was found at this link")
    kind = info.get("_type", "video")
    if kind in ("playlist", "multi_video"):
        raise MediaError(
            url, "this link is a playlist or a page with several videos; give the link of one video"
        )
    if kind != "video":
        raise MediaError(
            url, f"no single video was found at this link (yt-dlp gave a {kind!r} result)"
        )
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise MediaError(url, "live streams cannot be fetched")
    return info


def _check_before_download(url: str, info: dict, opts: _Options) -> None:
    duration = info.get("duration")
    if isinstance(duration, (int, float)) and duration > opts.max_seconds:
        raise MediaError(
            url,
            f"the video is {_describe_duration(duration)} long; the limit is "
            f"{_describe_duration(opts.max_seconds)} (FRAMESCOPE_FETCH_MAX_MINUTES)",
        )
    formats = info.get("requested_formats") or [info]
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    if all(isinstance(s, (int, float)) for s in sizes) and sum(sizes) > opts.max_bytes:
        raise MediaError(
            url,
            f"the video is about {_describe_size(sum(sizes))}, over the "
            f"{_describe_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)",
        )


def fetch_video(
    url: str,
    settings: Any,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FetchedVideo:
    """Download one video from a web page or direct link into <home>/downloads.

    Refuses unsafe links (see check_url), playlists, live streams and videos over the duration
    or size caps; the size cap is enforced while downloading. A link fetched before is not
    downloaded again. `progress(downloaded_bytes, total_bytes or None, message)` is called as it
    goes; `should_stop()` returning True stops the download (MediaError, nothing kept).
    """
    opts = _options(settings)
    clean, host, port = _normalize(url, opts)
    stop = should_stop or (lambda: False)
    report = progress or (lambda done, total, message: None)
    folder = opts.home / "downloads"
    with _url_lock(clean):
        cached = _cached(folder, clean)
        if cached is not None:
            size = cached.path.stat().st_size
            report(size, size, f"already downloaded: {cached.title}")
            return cached
        _check_resolution(url, host, port, opts)  # before anything connects (checked again then)
        if stop():
            raise MediaError(clean, STOPPED)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            work = folder / f".part-{uuid.uuid4().hex}"
            work.mkdir()
        except OSError as exc:
            raise MediaError(
                clean, f"cannot create the download folder {folder}: {exc.strerror or exc}"
            ) from exc
        guard = _Guard(opts, stop)
        try:
            return _download(clean, opts, guard, work, folder, report)
        finally:
            guard.close()
            shutil.rmtree(work, ignore_errors=True)


def _ydl_params(opts: _Options, work: Path, folder: Path, log: _Log) -> dict:
    """yt-dlp's options for one fetch into the folder `work` (hooks are added by the caller)."""
    import imageio_ffmpeg

    return {
        "logger": log,
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused: its entries are not extracted
        "playlistend": 2,  # ... and not listed further than needed to see it is one
        "format": _format_selector(opts.max_height),
        "merge_output_format": "mp4/webm/mkv",
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "paths": {"home": str(work), "temp": str(work)},
        "outtmpl": {"default": "media.%(ext)s"},
        "socket_timeout": opts.timeout,
        "retries": 2,
        "fragment_retries": 2,
        "extractor_retries": 1,
        "file_access_retries": 1,
        "max_filesize": opts.max_bytes,
        "proxy": "",  # never a proxy from the environment: the handler refuses proxies anyway
        "external_downloader": {"default": "native"},
        "external_downloader_args": {"ffmpeg_i": list(_FFMPEG_INPUT)},
        "postprocessor_args": {
            f"{pp}+ffmpeg_i": list(_FFMPEG_INPUT)
            for pp in (
                "merger",
                "fixupm3u8",
                "fixupm4a",
                "fixuptimestamp",
                "fixupduration",
                "fixupduplicatemoov",
                "fixupstretched",
            )
        },
        "hls_prefer_native": True,
        "concurrent_fragment_downloads": 1,
        "enable_file_urls": False,
        "remote_components": [],  # yt-dlp fetches no helper scripts of its own
        "allow_unplayable_formats": False,
        "writesubtitles": False,
        "writeautomaticsub": False,
        "subtitlesformat": "vtt",
        "writethumbnail": False,
        "writeinfojson": False,
        "updatetime": False,
        "geo_bypass": False,
        "cachedir": str(folder / ".cache"),
        "overwrites": True,
        "check_formats": False,
    }


def _download(
    url: str, opts: _Options, guard: _Guard, work: Path, folder: Path, report: Progress
) -> FetchedVideo:
    log = _Log()
    files: dict[str, list[int | None]] = {}  # download file -> [bytes so far, total if known]
    state = {"title": "video"}

    def on_progress(d: dict) -> None:
        guard.check()
        name = str(d.get("filename") or d.get("tmpfilename") or "")
        status = d.get("status")
        done = d.get("downloaded_bytes") or 0
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        if status not in ("downloading", "finished"):
            return
        files[name] = [int(done), int(total) if total else None]
        received = sum(v[0] or 0 for v in files.values())
        if received > opts.max_bytes:
            raise _Abort(
                guard.fail(
                    f"the download passed the {_describe_size(opts.max_bytes)} cap "
                    f"(FRAMESCOPE_FETCH_MAX_MB) and was stopped; the partial file was removed"
                )
            )
        if status == "downloading" and d.get("total_bytes") and d["total_bytes"] > opts.max_bytes:
            raise _Abort(
                guard.fail(
                    f"the file is {_describe_size(d['total_bytes'])}, over the "
                    f"{_describe_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)"
                )
            )
        totals = [v[1] for v in files.values()]
        whole = sum(totals) if all(totals) else None
        report(received, whole, f"downloading {state['title']}: {_describe_size(received)}")

    def on_postprocess(d: dict) -> None:
        guard.check()
        if d.get("status") == "started":
            report(
                sum(v[0] or 0 for v in files.values()),
                None,
                f"processing the download ({d.get('postprocessor')})",
            )

    params = _ydl_params(opts, work, folder, log)
    params["progress_hooks"] = [on_progress]
    params["postprocessor_hooks"] = [on_postprocess]

    try:
        with _GuardedYDL(params, guard) as ydl:
            report(0, None, "reading the page")
            info = _single_video(url, ydl.extract_info(url, download=False))
            guard.check()
            _check_before_download(url, info, opts)
            state["title"] = str(info.get("title") or "video")
            key = f"{info.get('extractor_key')}:{info.get('id')}" if info.get("id") else None
            if key:
                cached = _cached(folder, url, key)
                if cached is not None:
                    _remember(folder, cached, key)
                    return cached
            language = _pick_subtitle_language(info)
            if language:
                ydl.params["writesubtitles"] = True
                ydl.params["writeautomaticsub"] = True
                ydl.params["subtitleslangs"] = [re.escape(language)]
            result = ydl.process_ie_result(info, download=True)
            guard.check()
            if not isinstance(result, dict):
                result = info
    except (_Abort, YoutubeDLError) as exc:
        if guard.reason:
            raise MediaError(url, guard.reason) from None
        raise MediaError(url, _short(exc)) from None
    except MediaError:
        raise
    except OSError as exc:
        if guard.reason:
            raise MediaError(url, guard.reason) from None
        raise MediaError(url, f"the download failed ({exc.strerror or exc})") from None
    if guard.reason:
        raise MediaError(url, guard.reason)

    video = _downloaded_file(result, work)
    if video is None:
        said = next((line for line in log.lines if "max-filesize" in line), None)
        if said:
            raise MediaError(
                url,
                f"the server says the file is over the {_describe_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)",
            )
        errors = [line for line in log.lines if "ERROR" in line or "error" in line.lower()]
        reason = _short(Exception(errors[-1])) if errors else "yt-dlp finished without a video file"
        raise MediaError(url, f"the download failed: {reason}")
    report(video.stat().st_size, video.stat().st_size, "checking the video")
    limits = VideoLimits(
        max_duration_s=opts.max_seconds, max_pixels=opts.max_pixels, max_bytes=opts.max_bytes
    )
    try:
        probed = probe_video(video, limits)
    except MediaError as exc:
        raise MediaError(url, f"the downloaded file is not a usable video: {exc.reason}") from None

    cues: tuple[tuple[float, float, str], ...] = ()
    for sub in sorted(work.glob("*.vtt")):
        try:
            with open(sub, encoding="utf-8", errors="replace") as fh:
                cues = parse_vtt(fh.read(SUBTITLE_CAP))
        except OSError:
            cues = ()
        if cues:
            break
    chapters = []
    for chapter in result.get("chapters") or info.get("chapters") or ():
        if isinstance(chapter, dict) and isinstance(chapter.get("start_time"), (int, float)):
            chapters.append(
                {
                    "start": float(chapter["start_time"]),
                    "end": float(chapter.get("end_time") or probed.duration),
                    "title": str(chapter.get("title") or ""),
                }
            )
    duration = info.get("duration")
    final = folder / _file_name(info, url, video.suffix.lstrip(".").lower())
    try:
        os.replace(video, final)
    except OSError as exc:
        raise MediaError(url, f"cannot keep the downloaded file: {exc.strerror or exc}") from exc
    uploader = info.get("uploader") or info.get("channel")
    fetched = FetchedVideo(
        url=url,
        path=final,
        title=str(info.get("title") or final.stem),
        uploader=str(uploader) if uploader else None,
        duration=float(duration)
        if isinstance(duration, (int, float)) and duration > 0
        else probed.duration,
        chapters=tuple(chapters),
        subtitles="\n".join(text for _, _, text in cues) if cues else None,
        cues=cues,
        extractor=str(info.get("extractor_key") or info.get("extractor") or ""),
    )
    _remember(folder, fetched, key)
    report(final.stat().st_size, final.stat().st_size, f"downloaded {fetched.title}")
    return fetched


def _downloaded_file(result: Any, work: Path) -> Path | None:
    if isinstance(result, dict):
        for item in result.get("requested_downloads") or []:
            path = item.get("filepath") if isinstance(item, dict) else None
            if path and Path(path).is_file() and Path(path).resolve().parent == work.resolve():
                return Path(path)
    candidates = [
        p
        for p in work.iterdir()
        if p.is_file()
        and p.suffix.lower() not in (".vtt", ".srt", ".part", ".ytdl", ".json")
        and not p.name.startswith(".")
        and ".part" not in p.suffixes
        and _looks_like_media(p)
    ]
    return max(candidates, key=lambda p: p.stat().st_size) if candidates else None
