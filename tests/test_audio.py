"""A video's sound: streamed 16 kHz mono, and where the speech is (real Silero VAD from
faster-whisper's wheel) on real recorded sentences placed between known silences."""

from __future__ import annotations

import subprocess
import tracemalloc
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import MEDIA, require_media

from core.errors import MediaError
from core.media import probe_video
from core.media.audio import SAMPLE_RATE, audio_chunks, speech_segments

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SENTENCES = ["sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]  # fmt: skip


def _wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def _video(out: Path, audio: np.ndarray | None, seconds: float | None = None) -> Path:
    """A still-picture H.264 video with this 16 kHz mono track (AAC), or none."""
    command = [
        FFMPEG,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=320x240:r=5",
    ]
    if audio is not None:
        raw = out.with_suffix(".wav")
        with wave.open(str(raw), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(audio.astype(np.int16).tobytes())
        command += ["-i", str(raw), "-shortest", "-c:a", "aac", "-b:a", "64k"]
    else:
        command += ["-t", str(seconds)]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(command, check=True)
    return out


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """3 s silence, a sentence, 4 s silence, another sentence, 3 s silence: (video, speech)."""
    require_media("audio")
    silence = lambda s: np.zeros(int(s * SAMPLE_RATE), np.int16)  # noqa: E731
    parts, speech, t = [silence(3)], [], 3.0
    for i, name in enumerate(SENTENCES):
        said = _wav(MEDIA / "audio" / name)
        parts.append(said)
        speech.append((t, t + len(said) / SAMPLE_RATE))
        t += len(said) / SAMPLE_RATE
        gap = 4 if i == 0 else 3
        parts.append(silence(gap))
        t += gap
    folder = tmp_path_factory.mktemp("talk")
    return _video(folder / "talk.mp4", np.concatenate(parts)), speech


def test_speech_is_found_where_it_was_placed(talk):
    video, truth = talk
    found = speech_segments(probe_video(video))
    assert len(found) == len(truth), found
    for segment, (start, end) in zip(found, truth, strict=True):
        # VAD widens each stretch by its padding (0.2 s) and AAC adds a short priming delay
        assert abs(segment.start - start) < 0.6 and abs(segment.end - end) < 0.8, (segment, start)


def test_a_video_without_sound_or_with_silence_says_so(tmp_path):
    mute = probe_video(_video(tmp_path / "mute.mp4", None, seconds=2))
    with pytest.raises(MediaError, match="has no audio track"):
        speech_segments(mute)
    quiet = probe_video(_video(tmp_path / "quiet.mp4", np.zeros(5 * SAMPLE_RATE, np.int16)))
    assert speech_segments(quiet) == []


def test_a_long_track_streams_in_flat_memory(tmp_path):
    """20 minutes of sound, read in 30 s chunks: what is held stays near one chunk (1.9 MB)."""
    long = tmp_path / "long.mp4"
    subprocess.run(
        [FFMPEG, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=1",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1200",
         "-c:v", "libx264", "-c:a", "aac", "-b:a", "24k", str(long)],
        check=True,
    )  # fmt: skip
    info = probe_video(long)
    tracemalloc.start()
    seconds = 0.0
    for _, samples in audio_chunks(info, 30.0):
        seconds += len(samples) / SAMPLE_RATE
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds == pytest.approx(1200, abs=1)
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a 20-minute track"


def test_damaged_audio_keeps_what_decoded(talk, tmp_path):
    video, _ = talk
    data = video.read_bytes()
    cut = tmp_path / "cut.mkv"
    # remux to Matroska, then cut it: the track ends early instead of failing outright
    subprocess.run(
        [FFMPEG, "-y", "-loglevel", "error", "-i", str(video), "-c", "copy", str(cut)], check=True
    )
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) * 2 // 3])
    try:
        info = probe_video(cut)
    except MediaError:
        return  # refused as damaged when probed: a clear message is all that is owed
    total = sum(len(s) for _, s in audio_chunks(info)) / SAMPLE_RATE
    assert 0 < total < len(data)
