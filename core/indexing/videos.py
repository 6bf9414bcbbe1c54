"""A video into the library: frames sampled in a thread while CLIP embeds the previous ones."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TYPE_CHECKING

import torch

from core.errors import MediaError
from core.indexing.files import _Planned
from core.library import NewFrame
from core.media import (
    FrameSampler,
    make_thumbnail,
    probe_video,
)
from core.types import FailedFile, IndexReport, Sampling

if TYPE_CHECKING:
    from core.indexing.indexer import Indexer

FRAME_IMAGE_SIZE = 448  # stored video frames: big enough to caption, show and export


def embed_video(
    indexer: Indexer,
    plan: _Planned,
    collection_id: int,
    sampling: Sampling,
    report: IndexReport,
    done: float,
    tick,
    stop,
) -> None:
    """Sample, embed, de-duplicate and store a video's frames, batch by batch."""

    library, embedder, settings = indexer.library, indexer.embedder, indexer.settings
    cand = plan.candidate
    limits = settings.video
    try:
        info = probe_video(cand.path, limits)
    except MediaError as exc:
        indexer._fail(collection_id, cand, exc.reason, plan.size, plan.mtime, report, kind="video")
        return
    if plan.resume is not None:
        media_id = plan.resume
        resume_after, last_kept = library.ingest.video_resume_point(media_id, embedder.key)
    else:
        media_id = library.ingest.begin_video(
            collection_id,
            path=str(cand.path),
            name=cand.name,
            sha256=plan.sha256,
            size=plan.size,
            mtime=plan.mtime,
            width=info.width,
            height=info.height,
            duration=info.duration,
            fps=info.fps,
            sampling=sampling.key(),
            replaces=plan.replaces,
            url=cand.url,
        )
        resume_after, last_kept = None, None
    sampler = FrameSampler(
        info, every=sampling.every, max_frames=sampling.max_frames, scenes=sampling.scenes
    )
    frames_stored = library.catalog.frame_count(media_id)
    started = time.monotonic()
    stop_event = threading.Event()
    ready: queue.Queue = queue.Queue(maxsize=2 * settings.batch_size)
    end = object()

    def produce() -> None:
        # Decoding, thumbnails and preprocessing run here while the model embeds in the caller.
        try:
            for frame in sampler:
                if stop_event.is_set():
                    return
                if resume_after is not None and frame.timestamp <= resume_after + 1e-6:
                    continue
                ready.put(
                    (
                        frame.timestamp,
                        embedder.preprocess(frame.image),
                        make_thumbnail(frame.image, FRAME_IMAGE_SIZE),
                    )
                )
        except BaseException as exc:  # handed to the caller, which reports it
            ready.put(exc)
        finally:
            ready.put(end)

    producer = threading.Thread(target=produce, name="framescope-decode", daemon=True)
    producer.start()
    batch: list[tuple[float, torch.Tensor, bytes]] = []
    seen_frames = 0
    error: BaseException | None = None

    def flush() -> None:
        nonlocal last_kept, frames_stored
        if not batch:
            return
        vectors = embedder.embed_tensors(torch.stack([t for _, t, _ in batch]))
        kept = []
        for (timestamp, _, thumb), vector in zip(batch, vectors, strict=True):
            if last_kept is not None and float(vector @ last_kept) >= sampling.dedup:
                report.duplicates += 1
                continue
            kept.append(NewFrame(timestamp=timestamp, thumbnail=thumb, vector=vector))
            last_kept = vector
        library.ingest.add_frames(media_id, plan.sha256, embedder.key, kept)
        frames_stored += len(kept)
        report.frames += len(kept)
        batch.clear()

    try:
        while True:
            item = ready.get()
            if item is end:
                break
            if isinstance(item, BaseException):
                error = item
                continue
            if stop():
                report.interrupted = True
                break
            batch.append(item)
            seen_frames += 1
            if len(batch) >= settings.batch_size:
                flush()
                rate = seen_frames / max(time.monotonic() - started, 1e-6)
                left = max(sampler.planned - seen_frames, 0) / rate
                tick(
                    f"{cand.name}: {seen_frames}/{sampler.planned} frames, {rate:.1f} frames/s, about {left:.0f} s left",
                    done + min(seen_frames / max(sampler.planned, 1), 0.99),
                )
    finally:
        stop_event.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        producer.join()
    if report.interrupted:
        return
    flush()
    if error is not None and not isinstance(error, MediaError):
        raise error
    note = sampler.truncated or (error.reason if isinstance(error, MediaError) else None)
    if frames_stored == 0:
        library.ingest.remove_media([media_id])
        indexer._fail(
            collection_id,
            cand,
            note or "no frame could be decoded",
            plan.size,
            plan.mtime,
            report,
            kind="video",
        )
        return
    if note:
        note = f"kept {frames_stored} frames; {note}"
        report.warnings.append(FailedFile(indexer._label(cand), note))
    library.ingest.finish_video(media_id, note)
    if plan.resume is not None or plan.replaces is None:
        report.added += 1
    else:
        report.updated += 1
