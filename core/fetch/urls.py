"""Fetch settings (_options) and the checks of links, host names and addresses (check_url)."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.errors import AccessDenied, ConfigError, MediaError

MAX_URL_LENGTH = 4096

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


def _options(settings: Settings) -> _Options:
    """What one fetch may do: the fetch settings, within the limits on every video."""
    fetch, video = settings.fetch, settings.video
    return _Options(
        home=Path(settings.home),
        allowed_hosts=tuple(_allowlist_entry(h) for h in fetch.allowed_hosts if h.strip()),
        max_bytes=min(int(fetch.max_bytes), video.max_bytes),
        max_seconds=min(float(fetch.max_seconds), float(video.max_duration_s)),
        max_height=fetch.max_height,
        timeout=fetch.timeout,
        # only an explicit True turns it on: a stray string such as "0" must not
        allow_loopback=fetch.allow_loopback is True,
        max_pixels=video.max_pixels,
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


_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]+):", re.I)


def link_scheme(text: str) -> str | None:
    """The scheme ("https", "data", "javascript"...) the text starts with, in lower case, or None
    when it does not start like a link (a path; "C:" of a Windows path is not a scheme)."""
    match = _SCHEME.match(text.strip()) if isinstance(text, str) else None
    return match.group(1).lower() if match else None


def _scheme_refusal(scheme: str) -> _Refusal:
    shown = scheme if len(scheme) <= 20 else scheme[:20] + "..."
    if scheme == "file":
        return _Refusal(
            "only http:// and https:// links can be fetched, not file: links "
            "(give a video on this machine by its path)"
        )
    return _Refusal(
        f"not a web link or a file: {shown}: links cannot be fetched; "
        "only http:// and https:// links can"
    )


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
        written = link_scheme(url)
        if written and written not in ("http", "https") and "." not in written:
            raise _scheme_refusal(written)  # (with a dot it is a host name: http:// is missing)
        raise _Refusal("not a web link: it does not start with http:// or https://")
    if scheme not in ("http", "https"):
        raise _scheme_refusal(scheme)
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


def check_url(url: str, settings: Settings) -> str:
    """The link, normalised, if it may be fetched; MediaError (or AccessDenied) saying why not.

    Only http(s) links without credentials whose host resolves to public addresses only are
    accepted; with FRAMESCOPE_FETCH_HOSTS set the host must be one of those (or a subdomain).
    """
    opts = _options(settings)
    clean, host, port = _normalize(url, opts)
    _check_resolution(url, host, port, opts)
    return clean


def normalize_link(url: str, settings: Settings) -> str:
    """The link as fetch_video records it (normalised), without looking its host up: MediaError
    (or AccessDenied) when its form or host is refused. check_url also checks the addresses."""
    clean, _, _ = _normalize(url, _options(settings))
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
