"""Video probing, frame sampling and browser playback on real videos and hostile inputs."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
from conftest import MEGAMIND_CUTS

from core.errors import ConfigError, MediaError
from core.media import (
    FrameSampler,
    SampledFrame,
    VideoInfo,
    VideoLimits,
    probe_video,
    transcode_for_browser,
)
from core.media.probe import _open_video_container
from core.media.sampling import _Clock

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
VIDEOS = MEDIA / "video"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# What the shared videos are (checked against their players' metadata by hand).
EXPECTED = {
    "vtest.avi": dict(
        container="avi", codec="msmpeg4v3", size=(768, 576), fps=10.0, duration=79.5, audio=False
    ),
    "Megamind.avi": dict(
        container="avi", codec="mpeg4", size=(720, 528), fps=23.976, duration=11.26, audio=True
    ),
    "box.mp4": dict(
        container="mp4", codec="h264", size=(640, 480), fps=29.97, duration=15.18, audio=True
    ),
    "dashcam_highway.mp4": dict(
        container="mp4", codec="h264", size=(960, 540), fps=25.0, duration=8.84, audio=True
    ),
    "realshort.mp4": dict(
        container="mp4", codec="h264", size=(320, 240), fps=30.0, duration=1.2, audio=True
    ),
}


def shared_video(name: str) -> Path:
    path = VIDEOS / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared test video {path} is missing (CI=true requires it)")
        pytest.skip(f"shared test video {path} is not present on this machine")
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


DEFAULT_LIMITS = VideoLimits()


def assert_refused(path: Path, reason: str, limits: VideoLimits = DEFAULT_LIMITS) -> MediaError:
    with pytest.raises(MediaError) as caught:
        probe_video(path, limits)
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    assert re.search(reason, error.reason), error.reason
    return error


def frame_duration(info: VideoInfo) -> float:
    return 1.0 / info.fps


# -- probing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_probe_shared_videos(name):
    path = shared_video(name)
    info = probe_video(path)
    want = EXPECTED[name]
    assert info.path == str(path)
    assert info.container == want["container"]
    assert info.codec == want["codec"]
    assert (info.width, info.height) == want["size"]
    assert info.fps == pytest.approx(want["fps"], abs=0.05)
    assert info.duration == pytest.approx(want["duration"], abs=0.05)
    assert info.has_audio is want["audio"]
    assert info.pixel_format == "yuv420p"
    assert info.size_bytes == path.stat().st_size
    assert info.frames == pytest.approx(info.duration * info.fps, abs=2)
    assert info.browser_playable is (want["container"] == "mp4")


# -- time sampling ---------------------------------------------------------------------------


def check_images(frames: list[SampledFrame], info: VideoInfo, max_side: int = 448) -> None:
    for frame in frames:
        assert frame.image.mode == "RGB"
        width, height = frame.image.size
        assert max(width, height) == min(max_side, max(info.width, info.height))
        assert width / height == pytest.approx(info.width / info.height, rel=0.01)


@pytest.mark.parametrize("every", [1.0, 2.5])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_time_sampling_hits_each_target(name, every):
    info = probe_video(shared_video(name))
    sampler = FrameSampler(info, every=every)
    frames = list(sampler)
    count = math.floor(info.duration / every) + 1
    assert sampler.planned == count
    assert len(frames) == count
    for k, frame in enumerate(frames):
        # the first frame at or after the target: never before it, at most a frame after
        assert 0 <= frame.timestamp - k * every <= frame_duration(info) + 1e-6, (k, frame)
    assert sampler.truncated is None
    check_images(frames[:3], info)


@pytest.mark.parametrize("name", ["box.mp4", "Megamind.avi", "dashcam_highway.mp4", "bframes"])
def test_decoding_shortcuts_pick_the_same_frames(name, made):
    # The skipping and seeking of "auto" must pick exactly the frames a plain decode of every
    # frame picks: in a long-GOP H.264 with B-frames ("bframes", made here), and in box.mp4 and
    # Megamind.avi, whose B-frames have PTS in decode order.
    path = made / "bframes.mp4" if name == "bframes" else shared_video(name)
    info = probe_video(path)
    plain = list(FrameSampler(info, every=0.7, strategy="sequential"))
    for strategy in ("auto", "seek"):
        fast = list(FrameSampler(info, every=0.7, strategy=strategy))
        assert [f.timestamp for f in fast] == pytest.approx([f.timestamp for f in plain], abs=1e-6)
        for a, b in zip(plain, fast, strict=True):
            diff = np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16))
            assert diff.mean() < 1.0, (strategy, a.timestamp)


def test_sparse_sampling_seeks_and_stays_on_target(monkeypatch):
    info = probe_video(shared_video("vtest.avi"))  # keyframes every 25 s
    decoded = 0
    clock = _Clock.__call__

    def counting(self, frame):
        nonlocal decoded
        decoded += 1
        return clock(self, frame)

    monkeypatch.setattr(_Clock, "__call__", counting)
    frames = list(FrameSampler(info, every=30.0))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 30.0, 60.0], abs=1e-6)
    # it jumped to the keyframes at 25 s and 50 s instead of decoding the 601 frames up to 60 s
    assert decoded < 250


def test_max_frames_spreads_over_the_whole_video():
    info = probe_video(shared_video("vtest.avi"))
    sampler = FrameSampler(info, every=1.0, max_frames=8)
    frames = list(sampler)
    assert sampler.planned == len(frames) == 8
    step = info.duration / 8
    for k, frame in enumerate(frames):
        assert 0 <= frame.timestamp - k * step <= frame_duration(info) + 1e-6
    assert frames[-1].timestamp >= info.duration * 0.85  # covers the end, not just the start


def test_max_frames_does_not_widen_when_not_needed():
    info = probe_video(shared_video("dashcam_highway.mp4"))
    frames = list(FrameSampler(info, every=2.0, max_frames=50))
    assert [round(f.timestamp) for f in frames] == [0, 2, 4, 6, 8]


def test_max_side_and_early_stop():
    info = probe_video(shared_video("dashcam_highway.mp4"))
    sampler = FrameSampler(info, every=0.5, max_side=100)
    for frame in sampler:
        assert frame.image.size == (100, 56)
        break  # stopping early closes the file; iterating again starts over
    assert len(list(sampler)) == sampler.planned


def test_sampler_options_are_checked():
    info = probe_video(shared_video("realshort.mp4"))
    for bad in (dict(every=0), dict(every=-1.0), dict(every=math.nan), dict(max_frames=0)):
        with pytest.raises(ConfigError):
            FrameSampler(info, **bad)
    with pytest.raises(ConfigError):
        FrameSampler(info, strategy="fastest")


# -- scene sampling --------------------------------------------------------------------------


def test_scenes_find_megamind_cuts():
    info = probe_video(shared_video("Megamind.avi"))
    frames = list(FrameSampler(info, scenes=True))
    starts = [f.scene_start for f in frames]
    assert starts[0] == 0.0
    # non-reference frames are skipped while looking for cuts: a cut may be found 2 frames late
    assert starts[1:] == pytest.approx(MEGAMIND_CUTS, abs=0.1)
    for frame, start in zip(frames, starts, strict=True):
        assert start <= frame.timestamp <= start + 0.5
    check_images(frames, info)


def test_scenes_keep_a_fixed_shot_as_one():
    info = probe_video(shared_video("vtest.avi"))
    frames = list(FrameSampler(info, scenes=True))
    assert 1 <= len(frames) <= 2


def test_scenes_with_max_frames_still_cover_the_video():
    info = probe_video(shared_video("Megamind.avi"))
    frames = list(FrameSampler(info, scenes=True, max_frames=2))
    assert len(frames) == 2
    assert frames[1].scene_start == pytest.approx(MEGAMIND_CUTS[1], abs=0.1)  # 4.1 is too close


# -- truncated files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stop", "total"), [("box.mp4", r"7\.\d", "15.2"), ("vtest.avi", "39.8", "79.5")]
)
@pytest.mark.parametrize("scenes", [False, True])
def test_truncated_video_yields_what_decodes(tmp_path, name, stop, total, scenes):
    source = shared_video(name)
    half = tmp_path / f"half_{name}"
    data = source.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    info = probe_video(half)  # the header is intact: the damage shows when decoding
    assert info.duration == pytest.approx(float(total), abs=0.05)
    sampler = FrameSampler(info, every=1.0, scenes=scenes)
    frames = list(sampler)
    assert frames
    assert sampler.truncated is not None
    assert re.fullmatch(
        rf"decoding stopped at {stop} s of {total} s: file truncated or corrupt.*",
        sampler.truncated,
    ), sampler.truncated
    if not scenes:
        cut = float(re.search(r"at ([\d.]+) s", sampler.truncated).group(1))
        assert len(frames) == math.floor(cut) + 1
        assert frames[-1].timestamp <= cut


def test_file_cut_inside_the_header_is_refused(tmp_path):
    short = tmp_path / "short.mp4"
    short.write_bytes(shared_video("box.mp4").read_bytes()[:5000])  # inside the moov box
    assert_refused(short, "not a readable mp4 video")


# -- bad inputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Small files made with the ffmpeg binary, each under a misleading name."""
    out = tmp_path_factory.mktemp("made")
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    clip = ["-f", "lavfi", "-i", "testsrc=size=160x90:rate=10:duration=1"]
    ffmpeg(*tone, "-c:a", "aac", "-f", "mp4", str(out / "tone.mp4"))
    ffmpeg(*tone, "-c:a", "libvorbis", "-f", "matroska", str(out / "tone.mkv"))
    ffmpeg(*clip, "-c:v", "mpeg2video", "-f", "mpegts", str(out / "clip_ts.mp4"))
    ffmpeg(*clip, "-c:v", "flv", "-f", "flv", str(out / "clip_flv.mp4"))
    ffmpeg(*clip, "-frames:v", "1", "-f", "image2", "-c:v", "png", str(out / "still.mp4"))
    ffmpeg(*clip, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out / "plain.mp4"))
    moving = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=12"]
    long_gop = ["-g", "125", "-keyint_min", "125", "-sc_threshold", "0", "-bf", "3"]
    ffmpeg(*moving, "-c:v", "libx264", "-preset", "veryfast", *long_gop, str(out / "bframes.mp4"))
    ffmpeg(
        "-display_rotation", "90", "-i", str(out / "plain.mp4"), "-c", "copy", str(out / "rot.mp4")
    )
    ffmpeg(*clip, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "matroska", str(out / "h264.mkv"))
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]
    ffmpeg(*clip, *vp9, "-f", "webm", str(out / "vp9.webm"))
    ffmpeg(*clip, *vp9, "-f", "matroska", str(out / "vp9.mkv"))
    return out


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("just some text, not a video\n")
    assert_refused(path, r"the contents are a text file; supported containers are MP4/MOV")


def test_empty_missing_and_not_regular(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert_refused(empty, r"empty file \(0 bytes\)")
    assert_refused(tmp_path / "absent.mp4", "file not found")
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    assert_refused(folder, "not a regular file")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert_refused(fifo, "not a regular file")  # and does not block on opening it


def test_garbage_after_a_valid_signature(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(5000))
    assert_refused(path, "not a readable mp4 video|no video stream")
    path = tmp_path / "fake.avi"
    path.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + os.urandom(5000))
    assert_refused(path, "not a readable avi video|no video stream")


@pytest.mark.parametrize("name", ["tone.mp4", "tone.mkv"])
def test_audio_only(made, name):
    assert_refused(made / name, r"^no video stream \(audio only\)$")


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("clip_ts.mp4", "an MPEG transport stream"),
        ("clip_flv.mp4", r"an FLV \(Flash\) video"),
        ("still.mp4", "a PNG image"),
    ],
)
def test_unsupported_containers(made, name, what):
    assert_refused(made / name, f"not a supported video: the contents are {what}")


def test_limits(tmp_path):
    box = shared_video("box.mp4")
    assert_refused(
        box, r"video is 15\.2 s long; the limit is 10\.0 s", VideoLimits(max_duration_s=10)
    )
    assert_refused(
        box,
        r"video is 640x480 = 307,200 pixels per frame, over the limit of 300,000",
        VideoLimits(max_pixels=300_000),
    )
    assert_refused(box, r"file is 1\.8 MB; the limit is 1000 bytes", VideoLimits(max_bytes=1000))
    assert probe_video(box, VideoLimits(max_duration_s=16, max_pixels=640 * 480)).width == 640
    hours = VideoLimits(max_duration_s=60)
    assert_refused(
        shared_video("vtest.avi"), r"video is 1 min 19 s long; the limit is 1 min 0 s", hours
    )


def test_rotated_video_frames_are_upright(made):
    info = probe_video(made / "rot.mp4")
    assert (info.width, info.height) == (160, 90)  # as stored
    frame = next(iter(FrameSampler(info)))
    assert frame.image.size == (90, 160)  # as shown


def test_browser_playable(made):
    assert probe_video(made / "plain.mp4").browser_playable
    assert probe_video(made / "vp9.webm").browser_playable
    vp9_mkv = probe_video(made / "vp9.mkv")
    assert (vp9_mkv.container, vp9_mkv.codec, vp9_mkv.brand) == ("matroska", "vp9", "matroska")
    assert not vp9_mkv.browser_playable
    assert not probe_video(made / "h264.mkv").browser_playable


# -- playlists and scripts must never make FFmpeg open anything else -------------------------


class FifoCanary:
    """A FIFO that notices being opened for reading: a thread waits on opening its write end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # returns once someone opens the FIFO to read
        if not self._done.is_set():
            self.opened.set()
        os.close(fd)  # the reader sees end of file at once

    def was_opened(self) -> bool:
        return self.opened.wait(0.5)

    def close(self) -> None:
        self._done.set()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the waiting thread
        self._thread.join(5)
        os.close(fd)


class HttpCanary:
    """A local TCP server that counts the connections it gets."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def playlist(segment: str) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n"


def test_fifo_canary_detects_a_reader(tmp_path):
    # The control: FFmpeg's own format probing follows a playlist to the canary.
    canary = FifoCanary(tmp_path / "canary.ts")
    try:
        list_path = tmp_path / "list.m3u8"
        list_path.write_text(playlist(str(canary.path)))
        with pytest.raises(av.FFmpegError):
            av.open(str(list_path))
        assert canary.was_opened()
    finally:
        canary.close()


@pytest.mark.parametrize("name", ["playlist.mp4", "playlist.m3u8", "playlist.mkv"])
def test_hls_playlist_never_opens_a_local_file(tmp_path, name):
    canary = FifoCanary(tmp_path / "canary.ts")
    try:
        path = tmp_path / name
        path.write_text(playlist(str(canary.path)))
        assert_refused(path, r"the contents are an HLS playlist \(#EXTM3U\)")
        # and if the sniffing were bypassed, the forced demuxer would still not follow it
        with pytest.raises(MediaError):
            _open_video_container(str(path), path, "mp4")
        concat = tmp_path / "concat.mp4"
        concat.write_text(f"ffconcat version 1.0\nfile '{canary.path}'\n")
        assert_refused(concat, "an FFmpeg concat script")
        assert not canary.was_opened()
    finally:
        canary.close()


def test_hls_playlist_never_connects_out(tmp_path):
    canary = HttpCanary()
    try:
        with pytest.raises(OSError):  # the control: the canary counts connections
            urllib.request.urlopen(f"http://127.0.0.1:{canary.port}/probe", timeout=2)
        assert canary.connections == 1
        path = tmp_path / "remote.mp4"
        path.write_text(playlist(f"http://127.0.0.1:{canary.port}/seg.ts"))
        assert_refused(path, "HLS playlist")
        with pytest.raises(MediaError):
            _open_video_container(str(path), path, "matroska")
        threading.Event().wait(0.3)
        assert canary.connections == 1
    finally:
        canary.close()


# -- browser playback ------------------------------------------------------------------------


def test_transcode_avi_once_then_reuse(tmp_path, monkeypatch):
    info = probe_video(shared_video("vtest.avi"))
    assert not info.browser_playable
    cache = tmp_path / "cache"
    out = transcode_for_browser(info, cache)
    assert out.parent == cache and out.suffix == ".mp4"
    made_info = probe_video(out)
    assert (made_info.codec, made_info.pixel_format) == ("h264", "yuv420p")
    assert made_info.duration == pytest.approx(info.duration, abs=0.2)
    assert made_info.browser_playable
    assert [p.name for p in cache.iterdir()] == [out.name]  # no temporary file left
    stamp = out.stat().st_mtime_ns

    def no_ffmpeg(*args, **kwargs):
        raise AssertionError("ffmpeg must not run again")

    monkeypatch.setattr(subprocess, "run", no_ffmpeg)
    assert transcode_for_browser(info, cache) == out
    assert out.stat().st_mtime_ns == stamp


def test_playable_video_is_served_as_is(tmp_path):
    info = probe_video(shared_video("box.mp4"))
    assert transcode_for_browser(info, tmp_path) == shared_video("box.mp4")
    assert not any(tmp_path.iterdir())


def test_transcode_failure_is_a_media_error(tmp_path, made):
    info = probe_video(made / "h264.mkv")
    broken = tmp_path / "broken.mkv"
    broken.write_bytes((made / "h264.mkv").read_bytes()[:300])
    gone = VideoInfo(**{**info.__dict__, "path": str(broken)})
    with pytest.raises(MediaError) as caught:
        transcode_for_browser(gone, tmp_path / "cache")
    assert caught.value.path == str(broken)
    assert "cannot convert for browser playback" in caught.value.reason
    assert not any((tmp_path / "cache").iterdir())
