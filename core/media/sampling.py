"""Frame sampling: streaming decoded video frames at intervals or one per scene (FrameSampler)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from core.errors import ConfigError, MediaError
from core.media.probe import VideoInfo, _open_video_container, _video_stream

# Frame sampling tuning (see FrameSampler).
SCENE_THRESHOLD = 20.0  # mean HSV change (0-255 scale) between analysed frames that marks a cut
SCENE_RATIO = 3.0  # ... and it must also be this many times the recent mean (fast motion is no cut)
SCENE_MIN_LENGTH_S = 0.6  # cuts closer than this to the previous one are ignored (flashes)
SCENE_PICK_DELAY_S = 0.3  # the frame kept for a scene is this far after its cut
SEEK_MIN_GAP_S = 2.0  # "auto" seeks only when that skips at least this much video
STRATEGIES = ("auto", "sequential", "nonref", "seek")
_FEATURE_WIDTH = 64  # scene detection works on frames scaled to this width


@dataclass(frozen=True)
class SampledFrame:
    """One sampled video frame."""

    timestamp: float  # seconds from the start (presentation time)
    image: Image.Image  # RGB, upright, longer side at most the sampler's `max_side` (aspect kept)
    scene_start: float | None = None  # scene mode: when the frame's scene starts (its cut)


class _Clock:
    """Presentation times of decoded frames in seconds, even where a file's PTS are wrong.

    Some files label frames with decode-order times (box.mp4: B-frames without a ctts box; AVIs
    with packed B-frames), so the decoder hands out frames in display order with PTS that jump
    back and forth. As FFmpeg's best-effort timestamp does, PTS are trusted until they have gone
    backwards more often than the DTS; then the DTS are used. A frame's DTS is that of the packet
    whose decoding released it, so it is only right when every frame is decoded: `uses_dts` tells
    the sampler not to skip or seek in such files.
    """

    def __init__(self, stream, origin: float, frame_duration: float) -> None:
        self.time_base = stream.time_base or Fraction(1, 1)
        self.origin = origin
        self.frame_duration = frame_duration
        self.pts_faults = self.dts_faults = 0
        self.reset()

    @property
    def uses_dts(self) -> bool:
        return self.pts_faults > self.dts_faults

    def reset(self) -> None:
        """Forget the previous frame (after a seek)."""
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.last: float | None = None

    def __call__(self, frame) -> float:
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            if self.last_dts is not None and dts <= self.last_dts:
                self.dts_faults += 1
            self.last_dts = dts
        if pts is not None:
            if self.last_pts is not None and pts <= self.last_pts:
                self.pts_faults += 1
            self.last_pts = pts
        if pts is not None and (dts is None or self.pts_faults <= self.dts_faults):
            value: int | None = pts
        else:
            value = dts
        if value is None:
            seconds = 0.0 if self.last is None else self.last + self.frame_duration
        else:
            seconds = float(value * self.time_base) - self.origin
        if self.last is not None and seconds <= self.last:  # time only moves forward
            seconds = self.last + self.frame_duration
        self.last = seconds
        return seconds


class FrameSampler:
    """Streams sampled frames of a probed video; memory stays flat however long the video is.

    Time mode yields, for each target 0, every, 2*every, ... before the end, the first frame whose
    presentation time is at or after it. With `max_frames`, when the video would need more frames
    than that, the interval is widened to spread `max_frames` frames evenly over the whole video.

    Scene mode detects shot cuts and yields one frame per scene, SCENE_PICK_DELAY_S after its cut
    (clear of the blur of the cut; scenes are at least SCENE_MIN_LENGTH_S long). A cut is where the
    mean absolute change of the frame, scaled down and in HSV (hue compared around the circle), is
    at least `scene_threshold` (0-255 scale) and SCENE_RATIO times the mean change of the
    preceding second (so fast motion or a pan is not a cut). Non-reference frames are skipped
    when decoding (cut times may be a frame or two late). With `max_frames`, cuts closer than
    duration / max_frames to the previous one are ignored, so the scenes still cover the whole
    video, and no more than `max_frames` frames are yielded.

    Decoding strategy (`strategy`, default "auto", chosen by bench/bench_video_decode.py):
    threaded decoding, where non-reference frames (most B-frames) are skipped while they come
    before the next target, and the demuxer seeks to the keyframe before the next target when
    that keyframe is at least SEEK_MIN_GAP_S ahead (sparse sampling). It yields the same frames
    as decoding everything. Files whose PTS cannot be trusted (see _Clock; checked on
    the first 30 frames) are decoded frame by frame instead. "sequential", "nonref" (always skip
    non-reference frames: a yielded frame may be a few frames late) and "seek" (seek before every
    target) exist to be measured.

    After iteration, `truncated` is None or says why decoding stopped before the end (the frames
    yielded until then are good). `planned` is how many frames time mode will yield; in scene mode
    it starts as an upper bound and is re-estimated from the scenes found so far after each one
    (exact at the end). `progress` (0-1) is how much of the video is decoded. Iterating again
    starts over. An unreadable file raises MediaError from the iteration.
    """

    def __init__(
        self,
        info: VideoInfo,
        *,
        every: float = 1.0,
        max_frames: int | None = None,
        scenes: bool = False,
        scene_threshold: float = SCENE_THRESHOLD,
        max_side: int = 448,
        strategy: str = "auto",
    ) -> None:
        if not (isinstance(every, int | float) and math.isfinite(every) and every > 0):
            raise ConfigError(
                f"the sampling interval must be a positive number of seconds, not {every!r}"
            )
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ConfigError(
                f"max_frames must be a whole number of at least 1, not {max_frames!r}"
            )
        if not (math.isfinite(scene_threshold) and scene_threshold > 0):
            raise ConfigError(f"scene_threshold must be a positive number, not {scene_threshold!r}")
        if not (isinstance(max_side, int) and max_side >= 16):
            raise ConfigError(f"max_side must be a whole number of at least 16, not {max_side!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown decoding strategy {strategy!r}; one of {', '.join(STRATEGIES)}"
            )
        self.info = info
        self.max_frames = max_frames
        self.scenes = scenes
        self.scene_threshold = float(scene_threshold)
        self.max_side = max_side
        self.strategy = strategy
        self.truncated: str | None = None
        self.progress = 0.0
        self.frame_duration = 1.0 / info.fps
        if scenes:
            self.interval = every
            self.scene_spacing = max(
                SCENE_MIN_LENGTH_S, info.duration / max_frames if max_frames else 0.0
            )
            bound = math.floor(info.duration / self.scene_spacing) + 1
            self._scene_bound = min(bound, max_frames) if max_frames else bound
            self.planned = self._scene_bound
        else:
            # targets k*every strictly before the end: floor(duration/every) + 1 of them
            count = math.floor(info.duration / every - 1e-9) + 1
            if max_frames is not None and count > max_frames:
                every = info.duration / max_frames
                count = max_frames
            self.interval = every
            self.planned = max(count, 1)

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SampledFrame]:
        self.truncated = None
        self.progress = 0.0
        label = self.info.path
        fmt = _open_video_container(label, self.info.path, self.info.container)
        try:
            stream = _video_stream(fmt)
            if stream is None or stream.codec_context is None:
                raise MediaError(label, "no decodable video stream")
            for other in fmt.streams:
                if other is not stream:  # the demuxer need not even read them
                    other.discard = av.stream.Discard.all
            stream.thread_type = "AUTO"  # frame and slice threads
            origin = fmt.start_time / av.time_base if fmt.start_time is not None else 0.0
            clock = _Clock(stream, origin, self.frame_duration)
            if self.scenes:
                yield from self._by_scene(fmt, stream, clock)
            else:
                yield from self._by_time(fmt, stream, clock)
            self.progress = 1.0
        finally:
            fmt.close()

    def _image(self, frame) -> Image.Image:
        """The frame as an upright RGB image, scaled down by FFmpeg while converting."""
        ctx_sar = self._sar
        width, height = frame.width, frame.height
        shown_width = width * ctx_sar
        scale = min(1.0, self.max_side / max(shown_width, height))
        out_w = max(1, round(shown_width * scale))
        out_h = max(1, round(height * scale))
        image = frame.reformat(
            width=out_w, height=out_h, format="rgb24", interpolation="AREA"
        ).to_image()
        turn = {
            90: Image.Transpose.ROTATE_90,
            180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270,
        }.get(round(frame.rotation) % 360)
        return image.transpose(turn) if turn is not None else image

    def _start(self, stream) -> None:
        sar = stream.codec_context.sample_aspect_ratio
        self._sar = float(sar) if sar and sar > 0 else 1.0

    def _packets(self, fmt, stream, state: dict) -> Iterator:
        """Demuxed packets; a demuxer error ends them and is kept in `state`."""
        packets = fmt.demux(stream)
        try:
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except Exception as exc:  # the file ends mid-packet, or is corrupt
                    state["error"] = exc
                    state["eof"] = True
                    return
                yield packet
        finally:
            packets.close()

    def _decode(self, packet, state: dict) -> list:
        """A packet's frames; a packet that fails to decode is skipped, as players do."""
        try:
            return packet.decode()
        except Exception as exc:
            state["error"] = exc
            state["decode_errors"] = state.get("decode_errors", 0) + 1
            return []

    def _finish(self, state: dict, last: float | None) -> None:
        """Set `truncated` when decoding ended well before the container's duration."""
        duration = self.info.duration
        error = state.get("error")
        if last is None:
            detail = f": {_error_text(error)}" if error is not None else ""
            raise MediaError(
                self.info.path, f"no frame could be decoded (file truncated or corrupt{detail})"
            )
        covered = last + self.frame_duration
        if covered < duration - max(1.0, 3 * self.frame_duration):
            detail = f" ({_error_text(error)})" if error is not None else ""
            self.truncated = f"decoding stopped at {last:.1f} s of {duration:.1f} s: file truncated or corrupt{detail}"

    def _by_time(self, fmt, stream, clock: _Clock) -> Iterator[SampledFrame]:
        self._start(stream)
        ctx = stream.codec_context
        interval, count, eps = self.interval, self.planned, 1e-6
        # Non-reference frames are skipped while their packets' times (display times, as the
        # PTS are trusted when skipping) are before the next target: no other frame needs them,
        # and none of them is the first at or after the target. Half a frame absorbs rounding.
        margin = 0.5 * self.frame_duration
        # The first frames are all decoded, to learn whether the PTS can be trusted (_Clock).
        calibration = 30
        decoded = 0
        strategy = self.strategy
        index = stream.index_entries if strategy in ("auto", "seek") else None
        can_seek = index is not None and len(index) > 0
        time_base = stream.time_base or Fraction(1, 1)
        origin = clock.origin
        state: dict = {}
        k = 0
        last_ts: float | None = None  # of the last decoded frame
        pending = None  # (timestamp, frame): the last decoded frame not yielded
        frontier = -math.inf  # how far demuxing and decoding got since the start or last seek
        sought_for = -1
        key_time = -math.inf
        if strategy == "nonref":
            ctx.skip_frame = "NONREF"

        while k < count and not state.get("eof"):
            target = k * interval
            seek_to = None
            for packet in self._packets(fmt, stream, state):
                packet_ts = packet.pts if packet.pts is not None else packet.dts
                packet_time = None if packet_ts is None else float(packet_ts * time_base) - origin
                shortcuts = decoded >= calibration and not clock.uses_dts
                if strategy == "auto":
                    far = shortcuts and packet_time is not None and packet_time < target - margin
                    ctx.skip_frame = "NONREF" if far else "DEFAULT"
                for frame in self._decode(packet, state):
                    decoded += 1
                    ts = clock(frame)
                    last_ts = ts
                    frontier = max(frontier, ts)
                    self.progress = min(ts / self.info.duration, 1.0)
                    if ts + eps < target:
                        pending = (ts, frame)
                        continue
                    pending = None
                    yield SampledFrame(ts, self._image(frame))
                    while k < count and k * interval <= ts + eps:  # targets this frame answers
                        k += 1
                    if k >= count:
                        return
                    target = k * interval
                if packet_time is not None:
                    frontier = max(frontier, packet_time)
                if not (can_seek and shortcuts):
                    continue
                # Seek when it skips enough video to pay for flushing the decoder.
                if strategy == "seek":
                    if sought_for != k and k > 0:
                        seek_to = target
                elif strategy == "auto":
                    key = index.search_timestamp(
                        round((target + origin) / time_base), backward=True
                    )
                    if key >= 0:
                        key_time = float(index[key].timestamp * time_base) - origin
                        if key_time - frontier >= max(SEEK_MIN_GAP_S, 8 * self.frame_duration):
                            seek_to = target
                if seek_to is not None:
                    break
            else:
                state["eof"] = True  # the packets ran out (or the demuxer failed)
            if seek_to is None:
                break
            sought_for = k
            try:
                fmt.seek(round((seek_to + origin) / time_base), stream=stream, backward=True)
            except Exception:  # an unseekable file is still read to the end
                can_seek = False
                continue
            clock.reset()
            pending = None
            # Decoding restarts at the keyframe before the target: never seek back behind it.
            frontier = key_time if strategy == "auto" else -math.inf

        if k < count and pending is not None:
            # The last target falls inside the last frame's display time (after its start).
            ts, frame = pending
            if k * interval - ts < 1.5 * self.frame_duration:
                yield SampledFrame(ts, self._image(frame))
                k += 1
        if k < count or last_ts is None:
            self._finish(state, last_ts)

    def _features(self, frame, size: tuple[int, int]) -> np.ndarray:
        small = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
        return np.asarray(small.to_image().convert("HSV"), dtype=np.int16)

    def _by_scene(self, fmt, stream, clock: _Clock) -> Iterator[SampledFrame]:
        self._start(stream)
        ctx = stream.codec_context
        if self.strategy != "sequential":
            ctx.skip_frame = "NONREF"  # cuts need not be found to the frame
        width = _FEATURE_WIDTH
        height = max(2, round(width * self.info.height / (self.info.width * self._sar)))
        size = (width, height)
        recent: deque[float] = deque(maxlen=max(4, round(self.info.fps)))
        state: dict = {}
        previous = None
        scene_start = 0.0
        picked = False
        yielded = 0
        last = None  # (timestamp, frame) of the last decoded frame
        cap = self.max_frames

        def keep(ts: float, frame) -> SampledFrame:
            nonlocal yielded
            yielded += 1
            if self.progress > 0:  # scenes so far, extrapolated over the rest of the video
                guess = round(yielded / self.progress)
                self.planned = min(max(guess, yielded + 1), self._scene_bound)
            return SampledFrame(ts, self._image(frame), scene_start)

        for packet in self._packets(fmt, stream, state):
            for frame in self._decode(packet, state):
                ts = clock(frame)
                self.progress = min(ts / self.info.duration, 1.0)
                features = self._features(frame, size)
                if previous is not None and previous.shape == features.shape:
                    change = np.abs(features - previous)
                    hue = change[..., 0]
                    np.minimum(hue, 256 - hue, out=hue)  # hue is an angle
                    score = float(change.mean())
                    baseline = sum(recent) / len(recent) if recent else 0.0
                    if (
                        score >= self.scene_threshold
                        and score >= SCENE_RATIO * baseline
                        and ts - scene_start >= self.scene_spacing
                    ):
                        if not picked and last is not None:  # a short scene: its last frame
                            yield keep(*last)
                            if cap is not None and yielded >= cap:
                                break
                        scene_start, picked = ts, False
                        recent.clear()
                    else:
                        recent.append(score)
                previous = features
                if not picked and ts + 1e-6 >= scene_start + SCENE_PICK_DELAY_S:
                    yield keep(ts, frame)
                    picked = True
                last = (ts, frame)
                if cap is not None and yielded >= cap:
                    break
            else:
                continue
            break  # the cap is reached
        else:
            if not picked and last is not None:  # the video ends within the pick delay
                yield keep(*last)
            self._finish(state, last[0] if last is not None else None)
        self.planned = yielded


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
