"""The Indexer: plans a run (skip, rename, reuse, embed) and reports what it did."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from core.config import Settings
from core.errors import AccessDenied, MediaError
from core.fetch.urls import link_scheme
from core.files import write_atomic
from core.format import format_size
from core.indexing import links
from core.indexing.files import INDEXABLE, Candidate, _Planned, _prefetch, scan_folder, upload_name
from core.indexing.images import embed_images
from core.indexing.videos import embed_video
from core.jobs import Job, job_or_new
from core.library import Library, StoredFile
from core.media import (
    SUPPORTED_LIST,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    file_sha256,
)
from core.media.files import not_regular_reason
from core.models.clip import ClipEmbedder
from core.types import FailedFile, IndexReport, MediaRecord, Sampling


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
        images_only: bool = False,
    ) -> IndexReport:
        """Index image and video files and folders (recursively) into a collection.

        Raises MediaError for a missing path and AccessDenied for a folder outside the allowed
        roots, before anything is written. Bad files do not raise: they are recorded as failed
        (so are pipes, sockets and devices, never opened); a sub-folder that cannot be read is
        listed as failed, and what was indexed from it before is kept.
        `sampling` says how frames are taken from videos (default: the settings'); `names` gives
        files a display name other than their file name (uploads: the name the user knows).
        `job` receives progress (files done, possibly fractional, of all) and may stop the run:
        what was written is kept, and the same call resumes. One run per collection writes at a
        time: another run of the same collection (in any process) waits for this one, and says so.
        `images_only` (the Image search page) leaves videos alone: they are counted in
        `report.skipped_videos` (left for Frame search), neither indexed nor removed.
        """
        candidates: list[Candidate] = []
        folders: list[Path] = []
        unreadable: list[tuple[Path, str]] = []
        report = IndexReport(collection=collection)
        for raw in paths:
            path = Path(raw).expanduser().resolve()
            self.settings.check_folder_allowed(path if path.is_dir() else path.parent)
            if not path.exists():
                scheme = link_scheme(str(raw))
                raise MediaError(
                    raw,
                    f"not a web link or a file: {scheme}: links cannot be indexed"
                    if scheme and scheme not in ("http", "https")
                    else "no such file or folder",
                )
            if path.is_dir():
                folders.append(path)
                for f in scan_folder(path, lambda p, why: unreadable.append((p, why))):
                    if f.suffix.lower() in INDEXABLE:
                        candidates.append(Candidate(f, f.name))
                    else:
                        report.ignored += 1
            else:
                candidates.append(Candidate(path, (names or {}).get(str(raw), path.name)))
        if images_only:
            report.skipped_videos = sum(c.is_video for c in candidates)
            candidates = [c for c in candidates if not c.is_video]
        return self._run(
            candidates, folders, report, sampling, job_or_new(job), unreadable, images_only
        )

    def index_link(
        self,
        url: str,
        collection: str = "web",
        *,
        sampling: Sampling | None = None,
        job: Job | None = None,
    ) -> MediaRecord:
        """A web link's video fetched and indexed with its title and link (or found in the
        collection, neither fetched nor indexed again): see core.indexing.links.index_link."""
        return links.index_link(self, url, collection, sampling=sampling, job=job)[0]

    def index_links(
        self,
        urls: Sequence[str],
        collection: str = "web",
        *,
        sampling: Sampling | None = None,
        job: Job | None = None,
    ) -> IndexReport:
        """The videos of web links (a video, or a playlist's or channel's first ones) indexed one
        by one, failures in the report: see core.indexing.links.index_links."""
        return links.index_links(self, urls, collection, sampling=sampling, job=job)

    def save_upload(self, name: str, data: bytes) -> Path:
        """Keep an uploaded file in the data directory (named by content, so kept once)."""
        safe = upload_name(name)
        target = self.library.uploads_dir / f"{hashlib.sha256(data).hexdigest()[:16]}_{safe}"
        if not target.exists():
            self._check_upload_quota(safe, len(data))
            write_atomic(target, data)
        return target

    def _check_upload_quota(self, name: str, size: int) -> None:
        """In shared mode, a user's uploads stay within FRAMESCOPE_USER_UPLOAD_MB."""
        if self.library.user is None:
            return
        folder = self.library.uploads_dir
        used = sum(f.stat().st_size for f in folder.iterdir()) if folder.is_dir() else 0
        quota = self.settings.user_upload_bytes
        if used + size > quota:
            raise AccessDenied(
                f"{name}: your uploads would take {format_size(used + size)}, over your "
                f"{format_size(quota)} (FRAMESCOPE_USER_UPLOAD_MB)"
            )

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
        unreadable: Sequence[tuple[Path, str]] = (),
        images_only: bool = False,
    ) -> IndexReport:
        """The run, holding its collection's lock (waiting for another run of it to end)."""
        lock = self.library.collection_lock(report.collection)
        total = len(candidates)
        if not lock.acquire(
            on_wait=lambda message: job.report(0, total, message), stopped=lambda: job.stopped
        ):
            report.interrupted = True
            return report
        try:
            library = self.library
            sampling = sampling or self.settings.sampling
            collection_id = library.catalog.collection_id(report.collection)
            seen = {str(c.path) for c in candidates}
            stored = library.ingest.stored_files(collection_id)
            # Files indexed only with another model are not done for this one: embed them again.
            embedded = library.ingest.embedded_media(collection_id, self.embedder.key)
            stored = {
                p: f
                if f.status != "ok" or f.id in embedded
                else replace(f, sha256=None, mtime=None)
                for p, f in stored.items()
            }
            total = len(candidates)
            done = 0.0
            for folder, reason in unreadable:
                report.failed.append(FailedFile(str(folder), reason))

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
                        reason = (
                            "links to a file outside FRAMESCOPE_ROOTS: not indexed in shared mode"
                        )
                        self._fail(collection_id, cand, reason, None, None, report)
                        done += 1
                        continue
                special = not_regular_reason(st.st_mode)
                if special is not None:  # a pipe or a device: opening or reading it may never end
                    self._fail(collection_id, cand, special, None, None, report)
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
                except MediaError as exc:  # replaced by a pipe or a device since its stat
                    return item, None, exc.reason
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
                if (
                    old is not None
                    and old.sha256 == sha
                    and old.status == "ok"
                    and same_video_settings
                ):
                    library.ingest.touch(
                        old.id, st.st_size, st.st_mtime
                    )  # same content, new timestamp
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

            done = embed_images(self, images, collection_id, report, done, tick, stop)
            for plan in videos:
                if report.interrupted:
                    break
                embed_video(self, plan, collection_id, sampling, report, done, tick, stop)
                done += 1
            if not report.interrupted:
                # Files gone from the folders indexed (renames were followed above) leave the library;
                # those under a sub-folder that could not be read are not known to be gone: they stay.
                unseen = tuple(str(folder).rstrip("/") + "/" for folder, _ in unreadable)
                gone = []
                for folder in folders:
                    under = library.ingest.stored_files(collection_id, under=str(folder))
                    gone += [
                        f.id
                        for p, f in under.items()
                        if p not in seen
                        and not p.startswith(unseen)
                        and not (images_only and Candidate(Path(p), "").is_video)  # not looked at
                    ]
                report.removed = library.ingest.remove_media(gone)
            library.vectors.save_index(self.embedder.key, self.embedder.dim)
            tick("done")
            return report
        finally:
            lock.release()

    def _unchanged(
        self, old: StoredFile | None, st: os.stat_result, cand: Candidate, sampling: Sampling
    ) -> bool:
        if old is None or old.size != st.st_size or old.mtime != st.st_mtime:
            return False
        if not cand.is_video:
            return True
        # A video counts as done only when fully indexed with the same sampling settings.
        return old.status == "failed" or (old.status == "ok" and old.sampling == sampling.key())

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
            collection_id, str(cand.path), cand.name, reason, size, mtime, kind=kind, url=cand.url
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
            (
                report.skipped_videos,
                f"video{'s' if report.skipped_videos > 1 else ''} left for Frame search",
            ),
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
