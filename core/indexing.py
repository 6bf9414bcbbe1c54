"""Adding images and videos to the library: scan, plan (skip, rename, reuse, embed), embed, write.

The pipeline overlaps work: loader threads read, check, decode and preprocess the next images (or
the next video frames) while the model embeds the current batch. Each batch is written in one
transaction, so a run stopped at any point (Ctrl-C, a closed browser tab, kill -9) resumes where it
stopped; a video stopped half-way keeps its frames and continues from the last one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from core.config import Settings
from core.errors import AccessDenied, MediaError
from core.files import write_atomic
from core.jobs import Job, job_or_new
from core.library import Library, NewFrame, NewImage, StoredFile
from core.media import (
    IMAGE_EXTENSIONS,
    SUPPORTED_LIST,
    THUMBNAIL_SIZE,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameSampler,
    file_sha256,
    load_image,
    make_thumbnail,
    probe_video,
)
from core.models.clip import ClipEmbedder
from core.types import FailedFile, IndexReport, Sampling

# Names that operating systems and tools leave in photo folders.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_FOLDERS = frozenset(
    {"__macosx", "@eadir", "$recycle.bin", "system volume information", "lost+found"}
)
FRAME_IMAGE_SIZE = 448  # stored video frames: big enough to caption, show and export
INDEXABLE = IMAGE_EXTENSIONS | UNSUPPORTED_IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str  # display name: the file name, or an upload's original name

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class _Planned:
    candidate: Candidate
    size: int
    mtime: float
    sha256: str
    replaces: int | None
    resume: int | None = None  # a partly indexed video: its media id


def scan_folder(folder: Path) -> Iterator[Path]:
    """Files under a folder, recursively, in a stable order; hidden and system files skipped."""
    for root, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d.lower() not in SYSTEM_FOLDERS
        )
        for name in sorted(files):
            if name.startswith(".") or name.lower() in SYSTEM_FILES:
                continue
            yield Path(root) / name


def _prefetch(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """fn over items in worker threads, results in order, at most `window` in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framescope-load") as pool:
        it = iter(items)
        pending = deque(pool.submit(fn, x) for x in islice(it, window))
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def upload_name(name: str) -> str:
    """A safe file name for an upload: no folders, no control or odd characters."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]+", "_", base).strip(" .") or "upload"
    return base[:120]


class Indexer:
    """Adds files and folders to a collection of the library with one CLIP embedder."""

    def __init__(self, library: Library, embedder: ClipEmbedder, settings: Settings) -> None:
        self.library = library
        self.embedder = embedder
        self.settings = settings

    def index(
        self,
        paths: Sequence[Path | str],
        collection: str = "default",
        *,
        sampling: Sampling | None = None,
        job: Job | None = None,
        names: dict[str, str] | None = None,
    ) -> IndexReport:
        """Index image and video files and folders (recursively) into a collection.

        Raises MediaError for a missing path and AccessDenied for a folder outside the allowed
        roots, before anything is written. Bad files do not raise: they are recorded as failed.
        `sampling` says how frames are taken from videos (default: the settings'); `names` gives
        files a display name other than their file name (uploads: the name the user knows).
        `job` receives progress (files done, possibly fractional, of all) and may stop the run:
        what was written is kept, and the same call resumes.
        """
        candidates: list[Candidate] = []
        folders: list[Path] = []
        report = IndexReport(collection=collection)
        for raw in paths:
            path = Path(raw).expanduser().resolve()
            self.settings.check_folder_allowed(path if path.is_dir() else path.parent)
            if not path.exists():
                raise MediaError(raw, "no such file or folder")
            if path.is_dir():
                folders.append(path)
                for f in scan_folder(path):
                    if f.suffix.lower() in INDEXABLE:
                        candidates.append(Candidate(f, f.name))
                    else:
                        report.ignored += 1
            else:
                candidates.append(Candidate(path, (names or {}).get(str(raw), path.name)))
        return self._run(candidates, folders, report, sampling, job_or_new(job))

    def save_upload(self, name: str, data: bytes) -> Path:
        """Keep an uploaded file in the data directory (named by content, so kept once)."""
        safe = upload_name(name)
        target = self.library.uploads_dir / f"{hashlib.sha256(data).hexdigest()[:16]}_{safe}"
        if not target.exists():
            write_atomic(target, data)
        return target

    def index_uploads(
        self,
        uploads: Sequence[tuple[str, bytes]],
        collection: str = "uploads",
        *,
        sampling: Sampling | None = None,
        job: Job | None = None,
    ) -> IndexReport:
        """Keep uploaded files (name, bytes) in the data directory and index them."""
        candidates = [
            Candidate(self.save_upload(name, data), upload_name(name)) for name, data in uploads
        ]
        report = IndexReport(collection=collection)
        return self._run(candidates, [], report, sampling, job_or_new(job))

    # -- planning --------------------------------------------------------------------------

    def _run(
        self,
        candidates: list[Candidate],
        folders: list[Path],
        report: IndexReport,
        sampling: Sampling | None,
        job: Job,
    ) -> IndexReport:
        library = self.library
        sampling = sampling or self.settings.sampling
        collection_id = library.catalog.collection_id(report.collection)
        seen = {str(c.path) for c in candidates}
        stored = library.ingest.stored_files(collection_id)
        # Files indexed only with another model are not done for this one: embed them again.
        embedded = library.ingest.embedded_media(collection_id, self.embedder.key)
        stored = {
            p: f if f.status != "ok" or f.id in embedded else replace(f, sha256=None, mtime=None)
            for p, f in stored.items()
        }
        total = len(candidates)
        done = 0.0

        def tick(message: str, at: float | None = None) -> None:
            job.report(done if at is None else at, total, message)

        def stop() -> bool:
            return job.stopped

        to_check = []
        for cand in candidates:
            try:
                st = cand.path.stat()
            except OSError as exc:
                self._fail(
                    collection_id,
                    cand,
                    f"cannot read the file ({exc.strerror or exc})",
                    None,
                    None,
                    report,
                )
                done += 1
                continue
            if self.settings.mode == "shared" and cand.path.is_symlink():
                try:  # a link found in an allowed folder may point anywhere
                    self.settings.check_folder_allowed(cand.path.resolve().parent)
                except AccessDenied:
                    reason = "links to a file outside FRAMESCOPE_ROOTS: not indexed in shared mode"
                    self._fail(collection_id, cand, reason, None, None, report)
                    done += 1
                    continue
            old = stored.get(str(cand.path))
            if self._unchanged(old, st, cand, sampling):
                report.unchanged += 1
                done += 1
                continue
            if cand.path.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS:
                fmt = cand.path.suffix.lstrip(".").upper()
                reason = f"unsupported image format {fmt}; supported: {SUPPORTED_LIST}"
                self._fail(collection_id, cand, reason, st.st_size, st.st_mtime, report)
                done += 1
                continue
            to_check.append((cand, st, old))
        tick("checking files")

        def hash_one(item):
            try:
                return item, file_sha256(item[0].path), None
            except OSError as exc:
                return item, None, f"cannot read the file ({exc.strerror or exc})"

        images: list[_Planned] = []
        videos: list[_Planned] = []
        for (cand, st, old), sha, error in _prefetch(hash_one, to_check, workers=2, window=16):
            if stop():
                report.interrupted = True
                return report
            if done % 64 == 0:
                tick("checking files")
            if error:
                self._fail(collection_id, cand, error, st.st_size, st.st_mtime, report)
                done += 1
                continue
            same_video_settings = not cand.is_video or (
                old is not None and old.sampling == sampling.key()
            )
            if old is not None and old.sha256 == sha and old.status == "ok" and same_video_settings:
                library.ingest.touch(old.id, st.st_size, st.st_mtime)  # same content, new timestamp
                report.unchanged += 1
                done += 1
                continue
            moved_from = None
            if old is None:
                moved_from = next(
                    (
                        s
                        for s in library.ingest.same_content(collection_id, sha)
                        if s.path not in seen
                        and not Path(s.path).exists()
                        and (not cand.is_video or s.sampling == sampling.key())
                    ),
                    None,
                )
            if moved_from is not None:
                library.ingest.rename(moved_from.id, str(cand.path), cand.name, st.st_mtime)
                report.renamed += 1
                done += 1
                continue
            resume = None
            if (
                old is not None
                and old.status == "partial"
                and old.sha256 == sha
                and old.sampling == sampling.key()
            ):
                resume = old.id
            plan = _Planned(
                cand, st.st_size, st.st_mtime, sha, old.id if old is not None else None, resume
            )
            (videos if cand.is_video else images).append(plan)

        done = self._embed_images(images, collection_id, report, done, tick, stop)
        for plan in videos:
            if report.interrupted:
                break
            self._embed_video(plan, collection_id, sampling, report, done, tick, stop)
            done += 1
        if not report.interrupted:
            # Files gone from the folders indexed (renames were followed above) leave the library.
            gone = []
            for folder in folders:
                under = library.ingest.stored_files(collection_id, under=str(folder))
                gone += [f.id for p, f in under.items() if p not in seen]
            report.removed = library.ingest.remove_media(gone)
        library.vectors.save_index(self.embedder.key, self.embedder.dim)
        tick("done")
        return report

    def _unchanged(
        self, old: StoredFile | None, st: os.stat_result, cand: Candidate, sampling: Sampling
    ) -> bool:
        if old is None or old.size != st.st_size or old.mtime != st.st_mtime:
            return False
        if not cand.is_video:
            return True
        # A video counts as done only when fully indexed with the same sampling settings.
        return old.status == "failed" or (old.status == "ok" and old.sampling == sampling.key())

    # -- images ----------------------------------------------------------------------------

    def _embed_images(
        self,
        plans: list[_Planned],
        collection_id: int,
        report: IndexReport,
        done: float,
        tick,
        stop,
    ) -> float:
        """Loader threads prepare images while the model runs on the previous batch."""
        library, key = self.library, self.embedder.key
        batch_size = self.settings.batch_size
        min_side = max(THUMBNAIL_SIZE, 224)
        started = time.monotonic()
        embedded = 0

        def prepare(plan: _Planned):
            copy_of = library.ingest.embedded_copy(plan.sha256, key)
            try:
                loaded = load_image(
                    plan.candidate.path,
                    name=str(plan.candidate.path),
                    max_bytes=self.settings.max_image_bytes,
                    max_pixels=self.settings.max_image_pixels,
                    min_side=min_side,
                )
            except MediaError as exc:
                return plan, None, exc.reason
            tensor = self.embedder.preprocess(loaded.image) if copy_of is None else None
            return plan, (loaded, tensor, make_thumbnail(loaded.image), copy_of), None

        batch: list[tuple[_Planned, tuple]] = []

        def flush() -> None:
            nonlocal done, embedded
            if not batch:
                return
            fresh = [(p, prep) for p, prep in batch if prep[3] is None]
            vectors = (
                self.embedder.embed_tensors(torch.stack([prep[1] for _, prep in fresh]))
                if fresh
                else np.empty((0, self.embedder.dim), np.float32)
            )
            by_plan = {id(p): v for (p, _), v in zip(fresh, vectors, strict=True)}
            rows = []
            for plan, (loaded, _, thumb, copy_of) in batch:
                rows.append(
                    NewImage(
                        path=str(plan.candidate.path),
                        name=plan.candidate.name,
                        sha256=plan.sha256,
                        size=plan.size,
                        mtime=plan.mtime,
                        width=loaded.width,
                        height=loaded.height,
                        thumbnail=thumb,
                        vector=by_plan.get(id(plan)),
                        same_as=copy_of,
                        replaces=plan.replaces,
                    )
                )
                if copy_of is not None:
                    report.reused += 1
                elif plan.replaces is not None:
                    report.updated += 1
                else:
                    report.added += 1
            library.ingest.add_images(collection_id, key, rows)
            done += len(batch)
            embedded += len(fresh)
            rate = embedded / max(time.monotonic() - started, 1e-6)
            left = (len(plans) - embedded) / rate if rate > 0 else 0
            tick(f"{rate:.1f} images/s, about {left:.0f} s left", done)
            batch.clear()

        for plan, prep, error in _prefetch(prepare, plans, workers=2, window=2 * batch_size):
            if stop():
                report.interrupted = True
                break
            if error is not None:
                self._fail(collection_id, plan.candidate, error, plan.size, plan.mtime, report)
                done += 1
                continue
            batch.append((plan, prep))
            if len(batch) >= batch_size:
                flush()
        if not report.interrupted:
            flush()
        return done

    # -- videos ----------------------------------------------------------------------------

    def _embed_video(
        self,
        plan: _Planned,
        collection_id: int,
        sampling: Sampling,
        report: IndexReport,
        done: float,
        tick,
        stop,
    ) -> None:
        """Sample, embed, de-duplicate and store a video's frames, batch by batch."""

        library, embedder, settings = self.library, self.embedder, self.settings
        cand = plan.candidate
        limits = settings.video
        try:
            info = probe_video(cand.path, limits)
        except MediaError as exc:
            self._fail(collection_id, cand, exc.reason, plan.size, plan.mtime, report, kind="video")
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
            self._fail(
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
            report.warnings.append(FailedFile(self._label(cand), note))
        library.ingest.finish_video(media_id, note)
        if plan.resume is not None or plan.replaces is None:
            report.added += 1
        else:
            report.updated += 1

    def _label(self, cand: Candidate) -> str:
        return str(cand.path) if cand.name == cand.path.name else cand.name

    def _fail(
        self,
        collection_id: int,
        cand: Candidate,
        reason: str,
        size: int | None,
        mtime: float | None,
        report: IndexReport,
        kind: str | None = None,
    ) -> None:
        kind = kind or ("video" if cand.is_video else "image")
        self.library.ingest.record_failure(
            collection_id, str(cand.path), cand.name, reason, size, mtime, kind=kind
        )
        report.failed.append(FailedFile(self._label(cand), reason))


def index_report_lines(report: IndexReport) -> list[str]:
    """A human summary of a run, one line per fact, failures and warnings with their reasons."""
    parts = [
        f"{n} {label}"
        for n, label in (
            (report.added, "added"),
            (report.updated, "updated"),
            (report.renamed, "renamed"),
            (report.reused, "copies reused"),
            (report.unchanged, "unchanged"),
            (report.removed, "removed"),
            (len(report.failed), "failed"),
            (report.ignored, "other files ignored"),
            (report.frames, "video frames stored"),
            (report.duplicates, "near-duplicate frames dropped"),
        )
        if n
    ]
    lines = [
        f"Collection '{report.collection}': " + (", ".join(parts) if parts else "nothing to do")
    ]
    if report.interrupted:
        lines.append("Stopped before the end: run it again to resume.")
    lines += [f"  failed: {f.path}: {f.reason}" for f in report.failed]
    lines += [f"  warning: {f.path}: {f.reason}" for f in report.warnings]
    return lines
