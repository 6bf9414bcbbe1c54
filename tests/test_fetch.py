"""core.fetch: downloading a video from a link, and refusing links that reach private networks.

Every server here is started by the test on 127.0.0.1. Host names are answered by a fake resolver
(socket.getaddrinfo is replaced: no DNS query leaves the machine), and every outgoing connection
core.fetch makes goes through a tripwire that only lets loopback connections through. A "canary"
server records every connection it gets: in the refusal tests it must get none.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from core.config import MB, FetchSettings, Settings, hosts
from core.errors import AccessDenied, ConfigError, MediaError
from core.fetch import FetchedVideo, check_url, fetch_video, parse_vtt
from core.fetch import guard as fetch_guard
from core.fetch import urls as fetch_urls
from core.fetch import ytdlp as fetch_ytdlp
from core.jobs import Job
from core.media import probe_video

BOX = Path(__file__).resolve().parents[2] / "shared" / "media" / "video" / "box.mp4"
SHORT = BOX.with_name("realshort.mp4")  # another video, for a second site
PUBLIC_IP = "93.184.215.14"  # a public address the validator sees; nothing is ever sent to it

CAPTIONED_PAGE = b"""<!doctype html><html><head><title>Box with captions</title></head><body>
<video controls><source src="/box.mp4" type="video/mp4">
<track kind="captions" srclang="en" label="English" src="/box.vtt"></video>
</body></html>"""

CAPTIONS = b"""WEBVTT

00:00:00.500 --> 00:00:02.000
A box <b>on</b> a table

00:00:02.000 --> 00:00:02.010
A box on a table

00:00:02.010 --> 00:00:04.000
A box on a table
is turned around
"""

PLAYLIST_PAGE = b"""<!doctype html><html><head><title>Two clips</title></head><body>
<video src="/a.mp4" controls></video>
<video src="/b.mp4" controls></video>
</body></html>"""


# -- servers -----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        path = self.path.split("?")[0]
        with server.lock:
            server.hits.append(path)
        if path in server.files:  # this server's own files (two sites, one file name)
            data = server.files[path].read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path in ("/box.mp4", "/a.mp4", "/b.mp4"):
            data = BOX.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path in ("/page.html", "/captioned.html", "/box.vtt"):
            body, kind = {
                "/page.html": (PLAYLIST_PAGE, "text/html; charset=utf-8"),
                "/captioned.html": (CAPTIONED_PAGE, "text/html; charset=utf-8"),
                "/box.vtt": (CAPTIONS, "text/vtt"),
            }[path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.startswith("/hls/") and server.hls_dir and (server.hls_dir / path[5:]).is_file():
            body = (server.hls_dir / path[5:]).read_bytes()
            kind = "application/vnd.apple.mpegurl" if path.endswith(".m3u8") else "video/mp2t"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/fake.mp4":
            body = b"<html><body>not a video at all</body></html>" * 50
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/endless.mp4":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = os.urandom(64 * 1024)
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline and not server.closing:
                    self.wfile.write(frame)
            except OSError:
                pass
            self.close_connection = True
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: list[str] = []
        self.redirect_to = ""
        self.closing = False
        self.hls_dir: Path | None = None
        self.files: dict[str, Path] = {}

    @property
    def port(self) -> int:
        return self.server_address[1]

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits.count(path)


class _Canary:
    """Listens on 127.0.0.1 (and ::1 on the same port when it can) and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        self._socks = [socket.create_server(("127.0.0.1", 0))]
        self.port = self._socks[0].getsockname()[1]
        with contextlib.suppress(OSError):
            self._socks.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        for sock in self._socks:
            sock.settimeout(0.2)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        self._stop = False

    def _accept(self, sock: socket.socket) -> None:
        while not getattr(self, "_stop", False):
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        for sock in self._socks:
            sock.close()


@pytest.fixture(scope="module")
def server():
    if not BOX.is_file():
        pytest.skip(f"shared media not found at {BOX}")
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.closing = True
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def canary():
    c = _Canary()
    yield c
    c.close()


# -- the network seal: fake DNS and loopback-only connections ----------------------------------


class _Net:
    def __init__(self) -> None:
        self.names: dict[str, object] = {}  # host -> list of IPs, or a callable giving one
        self.routes: dict[str, int] = {}  # public IP -> loopback port the tripwire sends it to
        self.lookups: list[str] = []
        self.blocked: list[tuple] = []  # connections to non-loopback addresses (must stay empty)


@pytest.fixture(autouse=True)
def net(monkeypatch):
    state = _Net()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = fetch_urls._connect_socket

    def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else str(host)
        state.lookups.append(name)
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return real_getaddrinfo(name, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        if name == "localhost":
            ips = ["127.0.0.1", "::1"]
        elif name in state.names:
            value = state.names[name]
            ips = value() if callable(value) else value
        else:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0)
        out = []
        for ip in ips:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out

    def tripwire(family, socktype, proto, sockaddr, timeout):
        ip = sockaddr[0]
        if ip in state.routes:
            return real_connect(
                socket.AF_INET, socktype, proto, ("127.0.0.1", state.routes[ip]), timeout
            )
        if ip not in ("127.0.0.1", "::1"):
            state.blocked.append(sockaddr)
            raise OSError(f"test tripwire: refused a connection to {ip}")
        return real_connect(family, socktype, proto, sockaddr, timeout)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(fetch_guard, "_connect_socket", tripwire)
    yield state
    assert state.blocked == [], f"core.fetch tried to connect outside loopback: {state.blocked}"


def _settings(home: Path, **fetch: object) -> Settings:
    """Settings with these fetch settings (FetchSettings fields) and a short network timeout."""
    return Settings(home=home, fetch=FetchSettings(**{"timeout": 10, **fetch}))


def _leftovers(home: Path) -> list[str]:
    folder = home / "downloads"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in ("index.json", ".cache"))


# -- fetching ----------------------------------------------------------------------------------


def test_fetches_a_direct_link_once_and_then_uses_the_cache(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    url = f"http://127.0.0.1:{server.port}/box.mp4"
    seen: list[tuple] = []
    video = fetch_video(url, settings, job=Job(lambda s: seen.append((s.done, s.total, s.message))))

    assert isinstance(video, FetchedVideo)
    assert video.path.is_file() and video.path.parent == tmp_path / "downloads"
    assert video.title == "box" and video.extractor == "Generic"
    assert video.duration == pytest.approx(15.18, abs=0.1)
    info = probe_video(video.path)
    assert info.width == 640 and info.height == 480
    assert seen and seen[-1][0] == video.path.stat().st_size
    assert all(isinstance(done, int) and isinstance(msg, str) for done, _, msg in seen)
    assert (tmp_path / "downloads" / "index.json").is_file()
    assert _leftovers(tmp_path) == [video.path.name]

    hits = len(server.hits)
    again = fetch_video(url, settings)
    assert again.path == video.path and again.title == "box"
    assert len(server.hits) == hits, "the second fetch went to the network"


@pytest.fixture(scope="module")
def two_sites():
    """Two web servers, each serving a different video under the same name, /video.mp4."""
    if not (BOX.is_file() and SHORT.is_file()):
        pytest.skip(f"shared media not found at {BOX.parent}")
    sites = []
    for video in (BOX, SHORT):
        srv = _Server()
        srv.files["/video.mp4"] = video
        threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
        sites.append(srv)
    yield sites
    for srv in sites:
        srv.closing = True
        srv.shutdown()
        srv.server_close()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_file_name_on_two_sites_is_two_videos(tmp_path, two_sites, net):
    # a.example and b.example "are" two public addresses; the tripwire carries each to its server
    site_a, site_b = two_sites
    net.names.update({"a.example": ["93.184.215.14"], "b.example": ["93.184.215.15"]})
    net.routes.update({"93.184.215.14": site_a.port, "93.184.215.15": site_b.port})
    settings = _settings(tmp_path)
    first = fetch_video("http://a.example/video.mp4", settings)
    second = fetch_video("http://b.example/video.mp4", settings)
    assert _sha256(first.path) == _sha256(BOX)
    assert second.url == "http://b.example/video.mp4" and second.path != first.path
    assert _sha256(second.path) == _sha256(SHORT), "b.example got a.example's video"
    assert second.duration == pytest.approx(probe_video(SHORT).duration, abs=0.1)
    assert first.path.is_file() and _sha256(first.path) == _sha256(BOX)
    # each link is still served from the cache, with its own file
    hits = len(site_a.hits) + len(site_b.hits)
    assert fetch_video("http://a.example/video.mp4", settings).path == first.path
    assert fetch_video("http://b.example/video.mp4", settings).path == second.path
    assert len(site_a.hits) + len(site_b.hits) == hits
    index = json.loads((tmp_path / "downloads" / "index.json").read_text())
    assert not any(key.lower().startswith("generic:") for key in index["ids"])
    assert index["items"]["http://b.example/video.mp4"]["sha256"] == _sha256(SHORT)


@pytest.mark.parametrize("how", ["changed", "replaced"])
def test_a_cached_file_changed_on_disk_is_downloaded_again(tmp_path, server, how):
    settings = _settings(tmp_path, allow_loopback=True)
    url = f"http://127.0.0.1:{server.port}/box.mp4"
    video = fetch_video(url, settings)
    stat = video.path.stat()
    data = bytearray(video.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    if how == "changed":
        video.path.write_bytes(bytes(data))
    else:
        other = video.path.with_name("other.tmp")
        other.write_bytes(bytes(data))
        os.replace(other, video.path)
    os.utime(video.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the same time
    hits = server.count("/box.mp4")
    again = fetch_video(url, settings)
    assert server.count("/box.mp4") > hits, "a file changed on disk was served from the cache"
    assert again.path.is_file() and _sha256(again.path) == _sha256(BOX)
    assert _leftovers(tmp_path) == [again.path.name]


def test_only_a_site_given_id_links_two_urls_to_one_download(tmp_path):
    from core.fetch import cache

    assert cache.cache_key({"extractor_key": "Generic", "id": "video"}) is None
    assert cache.cache_key({"extractor_key": "HTML5MediaEmbed", "id": "video-1"}) is None
    assert cache.cache_key({"extractor_key": "Youtube", "id": "abc"}) == "Youtube:abc"
    folder = tmp_path / "downloads"
    folder.mkdir()
    file = folder / "Youtube-abc-0123456789.mp4"
    shutil.copyfile(BOX, file)
    video = FetchedVideo(
        "https://www.youtube.com/watch?v=abc", file, "t", None, 1.0, (), None, (), "Youtube"
    )
    cache._remember(folder, video, "Youtube:abc")
    hit = cache._cached(folder, "https://youtu.be/abc", "Youtube:abc")
    assert hit is not None and hit[0].path == file and hit[0].url == "https://youtu.be/abc"
    assert cache._cached(folder, "https://youtu.be/abc", "Generic:abc") is None
    assert cache._cached(folder, "https://youtu.be/other", "Youtube:other") is None
    data = file.read_bytes()
    file.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # the same size, another file
    assert cache._cached(folder, "https://www.youtube.com/watch?v=abc") is None


def test_a_playlist_page_is_refused(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    with pytest.raises(MediaError, match="playlist"):
        fetch_video(f"http://127.0.0.1:{server.port}/page.html", settings)
    assert server.count("/a.mp4") == 0 and server.count("/b.mp4") == 0
    assert _leftovers(tmp_path) == []


def test_a_file_that_is_not_a_video_is_refused_and_removed(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    with pytest.raises(MediaError, match=r"not a (usable )?video"):
        fetch_video(f"http://127.0.0.1:{server.port}/fake.mp4", settings)
    assert _leftovers(tmp_path) == []


def test_a_video_over_the_duration_cap_is_refused_and_removed(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True, max_seconds=6)
    with pytest.raises(MediaError, match="long"):
        fetch_video(f"http://127.0.0.1:{server.port}/box.mp4", settings)
    assert _leftovers(tmp_path) == []


def test_the_byte_cap_stops_an_endless_download(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True, max_bytes=MB)
    started = time.monotonic()
    with pytest.raises(MediaError, match="cap") as caught:
        fetch_video(f"http://127.0.0.1:{server.port}/endless.mp4", settings)
    assert time.monotonic() - started < 20
    assert "1.0 MB" in caught.value.reason
    assert _leftovers(tmp_path) == []


def test_a_file_announced_over_the_byte_cap_is_not_downloaded(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True, max_bytes=MB)
    with pytest.raises(MediaError, match=r"over the 1\.0 MB cap"):
        fetch_video(f"http://127.0.0.1:{server.port}/box.mp4", settings)
    assert _leftovers(tmp_path) == []


def test_should_stop_aborts_and_cleans_up(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    received = [0]

    def progress(step):
        received[0] = max(received[0], step.done)

    started = time.monotonic()
    with pytest.raises(MediaError, match="stopped before it finished"):
        fetch_video(
            f"http://127.0.0.1:{server.port}/endless.mp4",
            settings,
            job=Job(progress, should_stop=lambda: received[0] > 300_000),
        )
    assert time.monotonic() - started < 20
    assert 300_000 < received[0] < 50_000_000
    assert _leftovers(tmp_path) == []


def test_a_stop_before_starting_downloads_nothing(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    hits = len(server.hits)
    with pytest.raises(MediaError, match="stopped"):
        fetch_video(
            f"http://127.0.0.1:{server.port}/box.mp4", settings, job=Job(should_stop=lambda: True)
        )
    assert len(server.hits) == hits


def test_subtitles_of_a_page_are_kept_as_text_and_cues(tmp_path, server):
    settings = _settings(tmp_path, allow_loopback=True)
    video = fetch_video(f"http://127.0.0.1:{server.port}/captioned.html", settings)
    assert video.title.startswith("Box with captions")
    assert video.cues == (
        (0.5, 2.0, "A box on a table"),
        (2.01, 4.0, "is turned around"),
    )
    assert video.subtitles == "A box on a table\nis turned around"
    assert probe_video(video.path).has_audio
    assert _leftovers(tmp_path) == [video.path.name]
    # the metadata comes back from the index too
    again = fetch_video(f"http://127.0.0.1:{server.port}/captioned.html", settings)
    assert again == video


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "fatal", "-y", *args],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_an_hls_stream_is_fetched_with_the_native_downloader(tmp_path, server):
    hls = tmp_path / "hls"
    hls.mkdir()
    _ffmpeg(
        "-i", str(BOX), "-c", "copy", "-f", "hls", "-hls_time", "5", "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(hls / "seg%02d.ts"), str(hls / "index.m3u8"),
    )  # fmt: skip
    server.hls_dir = hls
    settings = _settings(tmp_path / "home", allow_loopback=True)
    video = fetch_video(f"http://127.0.0.1:{server.port}/hls/index.m3u8", settings)
    info = probe_video(video.path)
    assert info.container == "mp4" and info.duration == pytest.approx(15.2, abs=0.5)
    segments = [
        line for line in (hls / "index.m3u8").read_text().splitlines() if line.endswith(".ts")
    ]
    assert segments and all(server.count(f"/hls/{name}") == 1 for name in segments)
    assert _leftovers(tmp_path / "home") == [video.path.name]


def test_ffmpeg_merges_local_media_but_reads_nothing_else(tmp_path):
    """The options yt-dlp's merger runs FFmpeg with: local media files only."""
    from yt_dlp.postprocessor import FFmpegFixupM3u8PP, FFmpegMergerPP
    from yt_dlp.utils import PostProcessingError

    _ffmpeg("-i", str(BOX), "-an", "-c", "copy", str(tmp_path / "v.mp4"))
    _ffmpeg("-i", str(BOX), "-vn", "-c", "copy", "-f", "mp4", str(tmp_path / "a.m4a"))
    (tmp_path / "list.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"
    )
    opts = fetch_urls._options(_settings(tmp_path))
    guard = fetch_guard._Guard(opts, lambda: False)
    params = fetch_ytdlp._ydl_params(opts, tmp_path, tmp_path, fetch_ytdlp._Log())
    formats = [
        {"format_id": "v", "vcodec": "h264", "acodec": "none", "ext": "mp4", "protocol": "https"},
        {"format_id": "a", "vcodec": "none", "acodec": "mp3", "ext": "m4a", "protocol": "https"},
    ]

    def merge(audio: str, out: str) -> None:
        info = {
            "filepath": str(tmp_path / out),
            "ext": "mp4",
            "requested_formats": formats,
            "__files_to_merge": [str(tmp_path / "v.mp4"), str(tmp_path / audio)],
        }
        with fetch_ytdlp._GuardedYDL(params, guard) as ydl:
            FFmpegMergerPP(ydl).run(info)

    merge("a.m4a", "merged.mp4")
    merged = probe_video(tmp_path / "merged.mp4")
    assert merged.has_audio and merged.width == 640
    with fetch_ytdlp._GuardedYDL(params, guard) as ydl:
        for pp in (FFmpegMergerPP(ydl), FFmpegFixupM3u8PP(ydl)):
            assert pp._configuration_args("ffmpeg", ["_i1", "_i"]) == fetch_ytdlp._FFMPEG_INPUT
    with pytest.raises(PostProcessingError, match="Invalid argument"):
        merge("list.m3u8", "bad.mp4")  # an HLS playlist: not on FFmpeg's list of formats
    assert not (tmp_path / "bad.mp4").exists()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """The same server over TLS, with a self-signed certificate for 127.0.0.1."""
    if not BOX.is_file():
        pytest.skip(f"shared media not found at {BOX}")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    srv = _Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv, cert
    srv.closing = True
    srv.shutdown()
    srv.server_close()


def test_https_goes_through_the_pinned_connection_and_checks_certificates(
    tmp_path, https_server, monkeypatch
):
    srv, cert = https_server
    url = f"https://127.0.0.1:{srv.port}/box.mp4"
    settings = _settings(tmp_path, allow_loopback=True)
    with pytest.raises(MediaError, match=r"(?i)certificate"):
        fetch_video(url, settings)  # self-signed: refused
    trusting = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(fetch_guard._GuardedRH, "_context", lambda self, legacy: trusting)
    video = fetch_video(url, settings)
    assert probe_video(video.path).width == 640


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies_are_decoded_in_bounded_steps(encoding):
    import io

    text = b"<html>" + b"x" * 300_000 + b"</html>"
    if encoding == "gzip":
        packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        packer = zlib.compressobj()
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = io.BytesIO(packer.compress(text) + packer.flush())
    decoded = fetch_guard._Decoded(body, "gzip" if encoding == "gzip" else "deflate")
    parts = []
    while chunk := decoded.read(4096):
        assert len(chunk) <= 4096
        parts.append(chunk)
    assert b"".join(parts) == text


# -- refusals ----------------------------------------------------------------------------------

REFUSED = [
    ("http://127.0.0.1:{c}/x.mp4", "loopback"),
    ("http://[::1]:{c}/x.mp4", "loopback"),
    ("http://[::ffff:127.0.0.1]:{c}/x.mp4", "loopback"),
    ("http://0.0.0.0:{c}/x.mp4", "unspecified"),
    ("http://169.254.169.254/latest", "link-local"),
    ("http://[fe80::1]/x.mp4", "link-local"),
    ("http://10.0.0.1/x.mp4", "private"),
    ("http://192.168.1.1/x.mp4", "private"),
    ("http://172.16.0.1/x.mp4", "private"),
    ("http://[fd00::1]/x.mp4", "private"),
    ("http://100.64.0.1/x.mp4", "carrier-grade"),
    ("http://224.0.0.1/x.mp4", "multicast"),
    ("http://[64:ff9b::7f00:1]:{c}/x.mp4", "loopback"),
    ("http://2130706433:{c}/", "non-standard"),
    ("http://0x7f000001:{c}/", "non-standard"),
    ("http://0177.0.0.1:{c}/", "non-standard"),
    ("http://127.1:{c}/", "non-standard"),
    ("file:///etc/passwd", "only http"),
    ("ftp://example.com/x", "only http"),
    ("data:text/plain,hello", "not a web link or a file: data: links"),
    ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "not a web link or a file: data: links"),
    ("javascript:alert(1)", "not a web link or a file: javascript: links"),
    ("JavaScript:alert(1)", "not a web link or a file: javascript: links"),
    ("public.example/x.mp4", "not a web link"),
    ("http://user:secret@public.example/x.mp4", "user name or password"),
    ("http://localhost:{c}/x.mp4", "loopback"),
    ("http://evil.test:{c}/x.mp4", "loopback"),  # a name the resolver maps to 127.0.0.1
    ("http://mixed.test:{c}/x.mp4", "loopback"),  # one public and one loopback address
    ("http://nowhere.test/x.mp4", "cannot be resolved"),
]


@pytest.mark.parametrize(("template", "reason"), REFUSED)
def test_unsafe_links_are_refused_before_any_connection(tmp_path, canary, net, template, reason):
    net.names["public.example"] = [PUBLIC_IP]
    net.names["evil.test"] = ["127.0.0.1"]
    net.names["mixed.test"] = [PUBLIC_IP, "127.0.0.1"]
    url = template.format(c=canary.port)
    before = canary.connections
    with pytest.raises(MediaError, match=reason) as caught:
        fetch_video(url, _settings(tmp_path))
    assert caught.value.path.startswith(url[:20])
    time.sleep(0.05)
    assert canary.connections == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{c}/x.mp4",
        "http://localhost:{c}/x.mp4",
        "http://[::1]:{c}/x.mp4",
        "http://2130706433:{c}/x.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://127.0.0.1:{c}/x.mp4",
    ],
)
def test_a_redirect_to_a_private_address_is_refused(tmp_path, server, canary, net, target):
    # public.example "is" a public address for the checks; the tripwire carries the connection
    # to the local server, which redirects to the canary.
    net.names["public.example"] = [PUBLIC_IP]
    net.routes[PUBLIC_IP] = server.port
    server.redirect_to = target.format(c=canary.port)
    before, hops = canary.connections, server.count("/redirect.mp4")
    with pytest.raises(MediaError, match="redirect") as caught:
        fetch_video(f"http://public.example:{server.port}/redirect.mp4", _settings(tmp_path))
    assert server.count("/redirect.mp4") > hops, "the first hop should have been allowed"
    time.sleep(0.05)
    assert canary.connections == before
    assert "refused" in caught.value.reason
    assert _leftovers(tmp_path) == []


def test_the_connection_step_refuses_even_without_the_redirect_check(
    tmp_path, server, canary, net, monkeypatch
):
    monkeypatch.setattr(fetch_guard._Guard, "check_redirect", lambda self, old, new: None)
    net.names["public.example"] = [PUBLIC_IP]
    net.routes[PUBLIC_IP] = server.port
    server.redirect_to = f"http://127.0.0.1:{canary.port}/x.mp4"
    before = canary.connections
    with pytest.raises(MediaError, match=r"refused to connect.*loopback"):
        fetch_video(f"http://public.example:{server.port}/redirect.mp4", _settings(tmp_path))
    time.sleep(0.05)
    assert canary.connections == before


def test_a_host_that_rebinds_to_loopback_after_the_check_is_refused(tmp_path, canary, net):
    answers = iter([[PUBLIC_IP]])
    net.names["rebind.example"] = lambda: next(answers, ["127.0.0.1"])
    before = canary.connections
    with pytest.raises(MediaError, match="loopback"):
        fetch_video(f"http://rebind.example:{canary.port}/x.mp4", _settings(tmp_path))
    assert net.lookups.count("rebind.example") >= 2  # checked again when connecting
    time.sleep(0.05)
    assert canary.connections == before


def test_the_allowlist_refuses_other_hosts(tmp_path, net):
    net.names.update({"video.example.com": [PUBLIC_IP], "notexample.com": [PUBLIC_IP]})
    settings = _settings(tmp_path, allowed_hosts=("example.com",))
    assert check_url("https://video.example.com/watch?v=1", settings) == (
        "https://video.example.com/watch?v=1"
    )
    for url in ("https://notexample.com/v.mp4", "https://other.test/v.mp4"):
        with pytest.raises(AccessDenied, match="FRAMESCOPE_FETCH_HOSTS"):
            check_url(url, settings)
        with pytest.raises(AccessDenied):
            fetch_video(url, settings)
    # a comma list works as well
    comma = _settings(
        tmp_path, allowed_hosts=hosts("FRAMESCOPE_FETCH_HOSTS", "a.test, example.com")
    )
    assert check_url("http://video.example.com/x", comma).startswith("http://video.example.com")


def test_check_url_normalises(tmp_path, net):
    net.names["example.com"] = [PUBLIC_IP]
    settings = _settings(tmp_path)
    assert check_url("HTTP://Example.COM/a?b=1#part", settings) == "http://example.com/a?b=1"
    assert check_url("https://example.com", settings) == "https://example.com/"
    assert check_url("http://8.8.8.8:8080/v", settings) == "http://8.8.8.8:8080/v"


def test_loopback_is_never_allowed_by_default(tmp_path):
    assert fetch_urls._options(_settings(tmp_path)).allow_loopback is False
    assert fetch_urls._options(_settings(tmp_path, allow_loopback="1")).allow_loopback is False
    assert fetch_urls._options(Settings(home=tmp_path)).allow_loopback is False
    with pytest.raises(MediaError, match="loopback"):
        check_url("http://127.0.0.1:9/x.mp4", Settings(home=tmp_path))


def test_bad_settings_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_FETCH_MAX_MB", "0")
    with pytest.raises(ConfigError, match="FRAMESCOPE_FETCH_MAX_MB"):
        Settings.from_env()
    with pytest.raises(ConfigError, match="FRAMESCOPE_FETCH_HOSTS"):
        fetch_urls._options(_settings(tmp_path, allowed_hosts=("http://example.com/",)))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.215.14", True),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("198.18.0.1", False),  # benchmarking
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
        ("ff02::1", False),
    ],
)
def test_address_classification(address, public):
    problem = fetch_urls._address_problem(ipaddress.ip_address(address), allow_loopback=False)
    assert (problem is None) is public, problem


# -- subtitles ---------------------------------------------------------------------------------


def test_parse_vtt_keeps_times_and_drops_rolling_repeats():
    text = """WEBVTT
Kind: captions
Language: en

STYLE
::cue { color: white }

00:00:01.000 --> 00:00:03.500 align:start position:0%
Hello <c.colorE5E5E5>and</c> welcome &amp; enjoy

00:00:03.500 --> 00:00:03.510
Hello and welcome &amp; enjoy

1:02:03.250 --> 1:02:05.000
Hello and welcome &amp; enjoy
<00:00:04.000><c>to the</c> show
"""
    cues = parse_vtt(text)
    assert cues == (
        (1.0, 3.5, "Hello and welcome & enjoy"),
        (3723.25, 3725.0, "to the show"),
    )
