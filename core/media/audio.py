"""A video's sound: its audio track streamed as 16 kHz mono (memory stays flat however long the
track is), and where in it someone speaks (Silero VAD, whose model ships in faster-whisper)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from core.errors import MediaError
from core.media.probe import VideoInfo, _open_video_container

SAMPLE_RATE = 16_000
WINDOW_S = 300.0  # VAD runs on windows this long: bounded memory, cut points far apart
MIN_SILENCE_MS = 500  # a pause this long ends a stretch of speech
SPEECH_PAD_MS = 200  # speech stretches are widened by this on each side


@dataclass(frozen=True)
class Speech:
    """A stretch of speech in a video, seconds from its start."""

    start: float
    end: float


def audio_chunks(info: VideoInfo, seconds: float = 30.0) -> Iterator[tuple[float, np.ndarray]]:
    """(start second, float32 mono samples at 16 kHz) of the first audio track, `seconds` long
    each (the last may be shorter), decoded as they are read.

    Raises:
        MediaError: the video has no audio track, or it cannot be decoded at all.
    """
    label = Path(info.path).name
    if not info.has_audio:
        raise MediaError(label, "has no audio track")
    size = int(seconds * SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held, start, decoded = 0, 0.0, 0
    with _open_video_container(label, info.path, info.container) as fmt:
        stream = fmt.streams.audio[0]
        stream.thread_type = "AUTO"
        try:
            frames = fmt.decode(stream)
            for frame in frames:
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    pending.append(samples)
                    held += len(samples)
                    decoded += len(samples)
                    while held >= size:
                        block = np.concatenate(pending)
                        yield start, block[:size]
                        start += size / SAMPLE_RATE
                        pending, held = [block[size:]], len(block) - size
        except av.FFmpegError as exc:
            if decoded == 0:
                raise MediaError(label, f"its audio cannot be decoded ({exc})") from None
            # a damaged track keeps what decoded before the damage
    for out in resampler.resample(None):
        pending.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    rest = np.concatenate(pending) if pending else np.empty(0, np.float32)
    if len(rest):
        yield start, rest


def speech_segments(info: VideoInfo) -> list[Speech]:
    """Where someone speaks in the video's first audio track (empty: silence or no speech).

    Silero VAD (ONNX, from faster-whisper's wheel) runs over windows of the streamed track;
    stretches that meet at a window's edge are joined.

    Raises:
        MediaError: no audio track, or undecodable audio.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=SPEECH_PAD_MS, threshold=0.5
    )
    found: list[Speech] = []
    for start, samples in audio_chunks(info, WINDOW_S):
        for stamp in get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE):
            begin = start + stamp["start"] / SAMPLE_RATE
            end = start + stamp["end"] / SAMPLE_RATE
            if found and begin - found[-1].end < MIN_SILENCE_MS / 1000:
                found[-1] = Speech(found[-1].start, end)
            else:
                found.append(Speech(begin, end))
    return found
