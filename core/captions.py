"""Video captions: a caption per sampled frame, merged into segments and one overall caption,
exported as frames, text, JSON and subtitles; captions are also searchable."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import LibraryError, MediaError
from core.format import format_timestamp
from core.indexing import Indexer, upload_name
from core.jobs import Job, job_or_new
from core.library import Library
from core.media import VIDEO_EXTENSIONS
from core.media.probe import _describe_contents, _sniff_container
from core.models.captioner import Captioner
from core.models.clip import ClipEmbedder
from core.search.text import content_words
from core.types import Sampling

SEGMENT_SIMILARITY = (
    0.5  # consecutive captions sharing at least this share of words are one segment
)


@dataclass(frozen=True)
class FrameCaption:
    frame_id: int
    timestamp: float
    text: str
    image: str  # path of the stored frame image (JPEG)


@dataclass(frozen=True)
class Segment:
    """Consecutive frames whose captions say nearly the same thing."""

    start: float
    end: float
    text: str
    frames: int

    @property
    def label(self) -> str:
        return f"{format_timestamp(self.start)}-{format_timestamp(self.end)} {self.text}"


@dataclass(frozen=True)
class VideoCaptions:
    video: str
    path: str
    media_id: int
    duration: float
    model: str
    prompt: str
    frames: tuple[FrameCaption, ...]
    segments: tuple[Segment, ...]
    overall: str
    overall_method: str
    note: str | None = None  # e.g. the video was truncated

    def to_dict(self) -> dict:
        data = asdict(self)
        data["segments"] = [{**asdict(s), "label": s.label} for s in self.segments]
        return data


def caption_similarity(a: str, b: str) -> float:
    """Share of content words two captions have in common (Jaccard); 1.0 for two empty captions."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def merge_segments(
    frames: Sequence[FrameCaption], duration: float, similarity: float = SEGMENT_SIMILARITY
) -> list[Segment]:
    """Merge runs of near-identical consecutive captions; each segment runs until the next starts.

    A segment is named by its most frequent caption (the earliest on a tie).
    """
    segments: list[list[FrameCaption]] = []
    for frame in frames:
        if segments and caption_similarity(segments[-1][-1].text, frame.text) >= similarity:
            segments[-1].append(frame)
        else:
            segments.append([frame])
    out = []
    for i, run in enumerate(segments):
        end = (
            segments[i + 1][0].timestamp
            if i + 1 < len(segments)
            else max(duration, run[-1].timestamp)
        )
        counts = Counter(f.text for f in run)
        text = max(
            counts, key=lambda t: (counts[t], -next(j for j, f in enumerate(run) if f.text == t))
        )
        out.append(Segment(start=run[0].timestamp, end=end, text=text, frames=len(run)))
    return out


def representative_caption(
    embedder: ClipEmbedder, texts: Sequence[str], frame_vectors: np.ndarray
) -> str:
    """The caption whose CLIP text embedding is closest to the mean of the video's frame embeddings:
    the one sentence that best describes the video as a whole, without a language model."""
    unique = [t for t in dict.fromkeys(texts) if t.strip()]
    if not unique:
        return ""
    if len(unique) == 1 or len(frame_vectors) == 0:
        return unique[0]
    mean = frame_vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-8)
    scores = embedder.embed_texts(unique) @ mean
    return unique[int(np.argmax(scores))]


def check_video_file(path: Path, name: str | None = None) -> None:
    """MediaError, naming the file and what it is, when `path` is not named as a video (an image,
    a document): such a file is refused before anything is indexed. Named as a video, its
    contents are checked by the indexer (which records a bad one as failed)."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return
    label = name or path.name
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    videos = ", ".join(sorted(VIDEO_EXTENSIONS))
    try:
        container, _ = _sniff_container(label, head)
    except MediaError:
        what = _describe_contents(head) if head else "an empty file"
        it_is = f"it is {what}" if what.startswith(("a ", "an ")) else f"its contents are {what}"
        raise MediaError(label, f"not a video ({it_is})") from None
    raise MediaError(
        label,
        f"its contents are a video ({container}) but its name does not end in {videos}: rename it",
    )


def caption_video(
    library: Library,
    indexer: Indexer,
    captioner: Captioner,
    path: Path,
    *,
    sampling: Sampling,
    prompt: str = "",
    collection: str = "videos",
    name: str | None = None,
    job: Job | None = None,
    max_new_tokens: int = 30,
    batch_size: int = 8,
) -> VideoCaptions:
    """Sample a video's frames (stored in the library), caption those not captioned yet by this
    model and prompt, and aggregate. Captions are written batch by batch: a stopped run resumes.

    `job` gets the progress of sampling, then of captioning, and may stop either (MediaError; what
    was written is kept). Raises MediaError when the video cannot be used (the reason names the file;
    a file not named as a video, such as a photo, is refused before anything is written), and
    QueryError, before any work, when the prompt is too long for the captioner.
    """
    job = job_or_new(job)
    path = Path(path)
    captioner.check_prompt(prompt, max_new_tokens=max_new_tokens)
    check_video_file(path, name)
    names = {str(path): name} if name else None
    report = indexer.index(
        [path],
        collection,
        sampling=sampling,
        job=job,
        names=names,
    )
    if report.failed:
        raise MediaError(name or path.name, report.failed[0].reason)
    failed = next(
        (m for m in library.catalog.failed_files(collection) if m.path == str(path.resolve())), None
    )
    if failed is not None:  # failed on an earlier run, unchanged since: the same reason again
        raise MediaError(name or path.name, failed.error or "cannot be used")
    record = next(
        (v for v in library.catalog.videos([collection]) if v.path == str(path.resolve())), None
    )
    if record is None or report.interrupted:
        raise MediaError(
            name or path.name, "stopped before its frames were sampled; run it again to resume"
        )
    frames = library.catalog.frames_of(record.id)
    if not frames:
        raise MediaError(record.name, "no frame could be decoded")
    done = library.annotations.captions_for(record.id, captioner.key, prompt)
    todo = [f for f in frames if f[0] not in done]
    started = time.monotonic()
    for start in range(0, len(todo), batch_size):
        if job.stopped:
            raise MediaError(
                record.name, "captioning stopped; run it again to resume (captions so far are kept)"
            )
        chunk = todo[start : start + batch_size]
        images = [Image.open(p).convert("RGB") for _, _, p in chunk]
        texts = captioner.caption(
            images, prompt or None, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        library.annotations.add_captions(
            captioner.key, prompt, {f[0]: t for f, t in zip(chunk, texts, strict=True)}
        )
        done.update({f[0]: t for f, t in zip(chunk, texts, strict=True)})
        finished = start + len(chunk)
        rate = finished / max(time.monotonic() - started, 1e-6)
        job.report(
            finished,
            len(todo),
            f"captioned {finished}/{len(todo)} frames, about {(len(todo) - finished) / rate:.0f} s left",
        )
    captions = tuple(FrameCaption(fid, ts, done[fid], image) for fid, ts, image in frames)
    duration = record.duration or (captions[-1].timestamp if captions else 0.0)
    overall = representative_caption(
        indexer.embedder,
        [c.text for c in captions],
        library.vectors.frame_vectors(record.id, indexer.embedder.key),
    )
    return VideoCaptions(
        video=record.name,
        path=record.path,
        media_id=record.id,
        duration=duration,
        model=captioner.name,
        prompt=prompt,
        frames=captions,
        segments=tuple(merge_segments(captions, duration)),
        overall=overall,
        overall_method="the caption closest to the mean CLIP embedding of the video's frames",
        note=record.note,
    )


# -- subtitles and exports ---------------------------------------------------------------


def _clock(seconds: float, sep: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _cues(result: VideoCaptions) -> list[tuple[float, float, str]]:
    """One cue per segment, from its start to the next segment's (the last to the video's end), so
    cues never overlap or outlast the video; only an empty segment gets half a second."""
    return [(s.start, s.end if s.end > s.start else s.start + 0.5, s.text) for s in result.segments]


def _cue_text(text: str) -> str:
    """A cue's text made inert (see inert_text): no control characters, and no blank line, which
    would end the cue early (so that the next lines could pose as a cue of their own)."""
    from core.export import inert_text

    lines = (line.strip() for line in inert_text(text, keep="\n").split("\n"))
    return "\n".join(line for line in lines if line)


def to_srt(result: VideoCaptions) -> str:
    blocks = [
        f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{_cue_text(text)}\n"
        for i, (a, b, text) in enumerate(_cues(result), 1)
    ]
    return "\n".join(blocks)


def to_vtt(result: VideoCaptions) -> str:
    blocks = [
        f"{_clock(a, '.')} --> {_clock(b, '.')}\n{_cue_text(text).replace('-->', '->')}\n"
        for a, b, text in _cues(result)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def export_captions(result: VideoCaptions, out_dir: Path) -> Path:
    """Write a results folder: frame_01.jpg + frame_01.txt per frame, captions.json, .srt, .vtt.

    Raises LibraryError naming the folder when it cannot be written; the library is untouched.
    Captions, names and paths are written inert (see core.export.inert_text).
    """
    from core.export import inert_data, inert_text

    out_dir = Path(out_dir)
    width = max(2, len(str(len(result.frames))))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(result.frames, 1):
            stem = f"frame_{i:0{width}d}"
            Image.open(frame.image).convert("RGB").save(out_dir / f"{stem}.jpg", quality=92)
            (out_dir / f"{stem}.txt").write_text(
                f"{format_timestamp(frame.timestamp)} {inert_text(frame.text)}\n"
            )
        (out_dir / "captions.json").write_text(json.dumps(inert_data(result.to_dict()), indent=2))
        (out_dir / "captions.srt").write_text(to_srt(result))
        (out_dir / "captions.vtt").write_text(to_vtt(result))
    except OSError as exc:
        raise LibraryError(f"cannot write the results to {out_dir}: {exc.strerror or exc}") from exc
    return out_dir


def default_export_dir(home: Path, result: VideoCaptions) -> Path:
    stem = Path(upload_name(result.video)).stem
    return home / "exports" / "captions" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def zip_folder(folder: Path) -> bytes:
    """A results folder as one zip (names relative to the folder)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(Path(folder).iterdir()):
            archive.write(file, arcname=file.name)
    return buffer.getvalue()


def paragraph_caption(llm, result: VideoCaptions, max_new_tokens: int = 120) -> str:
    """A short paragraph about the whole video, written by the text LLM from the timed segments.

    The captions go to the model inside a <data> block; the instructions are in the system prompt.
    """
    from core.summarize import RECONCILE_SYSTEM, data_block

    notes = "\n".join(segment.label for segment in result.segments)
    prompt = (
        data_block("Timed captions of the video's frames", notes, 6000)
        + "\n\nDescribe the whole video in one short paragraph."
    )
    return llm.complete(RECONCILE_SYSTEM, prompt, max_new_tokens=max_new_tokens).strip()
