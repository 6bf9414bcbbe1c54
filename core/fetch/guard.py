"""The per-fetch guard (_Guard) and yt-dlp's only request handler (_GuardedRH), built on it."""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any

from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import (
    CertificateVerifyError,
    HTTPError,
    IncompleteRead,
    RequestError,
    SSLError,
    TransportError,
)
from yt_dlp.utils import DownloadCancelled
from yt_dlp.utils.networking import normalize_url

from core.fetch.urls import (
    _checked_addresses,
    _connect_socket,
    _Options,
    _Refusal,
    _split_url,
    _Unresolved,
)
from core.format import format_size

MAX_REDIRECTS = 10
PAGE_CAP = 64 * 1024 * 1024  # a web page, manifest or API answer is never larger than this
STOPPED = "the download was stopped before it finished; nothing was kept"


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
                    f"more than {format_size(self.budget)} was received in all; the download was stopped"
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
                    f"the server sent more than {format_size(self._cap)} for one request "
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
