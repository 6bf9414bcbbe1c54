"""Adding images to the library: scan, plan (skip, rename, reuse, embed), embed in batches, write.

The pipeline overlaps work: loader threads read, check, decode and preprocess the next images while
the model embeds the current batch. Each batch is written in one transaction, so a run stopped at
any point (Ctrl-C, a closed browser tab, kill -9) resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from core.config import Settings
from core.errors import MediaError
from core.media import (
    IMAGE_EXTENSIONS,
    SUPPORTED_LIST,
    THUMBNAIL_SIZE,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    file_sha256,
    load_image,
    make_thumbnail,
    write_atomic,
)
from core.models.clip import ClipEmbedder
from core.store import Library, NewImage
from core.types import FailedFile, IndexReport

# Names that operating systems and tools leave in photo folders.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_FOLDERS = frozenset(
    {"__macosx", "@eadir", "$recycle.bin", "system volume information", "lost+found"}
)

Progress = Callable[[int, int, str], None]  # (done, total, message)


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str  # display name: the file name, or an upload's original name


@dataclass(frozen=True)
class _Planned:
    candidate: Candidate
    size: int
    mtime: float
    sha256: str
    replaces: int | None


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
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> IndexReport:
        """Index files and folders (recursively) into a collection; returns what was done.

        Raises MediaError for a missing path and AccessDenied for a folder outside the allowed
        roots, before anything is written. Bad files do not raise: they are recorded as failed.
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
                    if (
                        f.suffix.lower() in IMAGE_EXTENSIONS
                        or f.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS
                    ):
                        candidates.append(Candidate(f, f.name))
                    else:
                        report.ignored += 1
            else:
                candidates.append(Candidate(path, path.name))
        return self._run(candidates, folders, report, progress, should_stop)

    def index_uploads(
        self,
        uploads: Sequence[tuple[str, bytes]],
        collection: str = "uploads",
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> IndexReport:
        """Keep uploaded files (name, bytes) in the data directory and index them."""
        candidates = []
        for name, data in uploads:
            safe = upload_name(name)
            digest = hashlib.sha256(data).hexdigest()[:16]
            target = self.library.uploads_dir / f"{digest}_{safe}"
            if not target.exists():
                write_atomic(target, data)
            candidates.append(Candidate(target, safe))
        return self._run(candidates, [], IndexReport(collection=collection), progress, should_stop)

    # -- the pipeline ----------------------------------------------------------------------

    def _run(
        self,
        candidates: list[Candidate],
        folders: list[Path],
        report: IndexReport,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> IndexReport:
        library, key = self.library, self.embedder.key
        collection_id = library.collection_id(report.collection)
        stop = should_stop or (lambda: False)
        seen = {str(c.path) for c in candidates}
        stored = library.stored_files(collection_id)
        total = len(candidates)
        done = 0

        def tick(message: str) -> None:
            if progress is not None:
                progress(done, total, message)

        # Plan: skip what is unchanged, follow renames, copy embeddings of duplicates.
        to_embed: list[_Planned] = []
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
            old = stored.get(str(cand.path))
            if old is not None and old.size == st.st_size and old.mtime == st.st_mtime:
                report.unchanged += 1
                done += 1
                continue
            if cand.path.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS:
                fmt = cand.path.suffix.lstrip(".").upper()
                self._fail(
                    collection_id,
                    cand,
                    f"unsupported image format {fmt}; supported: {SUPPORTED_LIST}",
                    st.st_size,
                    st.st_mtime,
                    report,
                )
                done += 1
                continue
            to_check.append((cand, st, old))
        tick("checking files")

        def hash_one(item):
            cand = item[0]
            try:
                return item, file_sha256(cand.path), None
            except OSError as exc:
                return item, None, f"cannot read the file ({exc.strerror or exc})"

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
            if old is not None and old.sha256 == sha and old.status == "ok":
                library.touch(old.id, st.st_size, st.st_mtime)  # same content, new timestamp
                report.unchanged += 1
                done += 1
                continue
            moved_from = (
                next(
                    (
                        s
                        for s in library.same_content(collection_id, sha)
                        if s.path not in seen and not Path(s.path).exists()
                    ),
                    None,
                )
                if old is None
                else None
            )
            if moved_from is not None:
                library.rename(moved_from.id, str(cand.path), cand.name, st.st_mtime)
                report.renamed += 1
                done += 1
                continue
            to_embed.append(
                _Planned(cand, st.st_size, st.st_mtime, sha, old.id if old is not None else None)
            )
        tick("embedding")

        # Embed: loader threads prepare images while the model runs on the previous batch.
        batch_size = self.settings.batch_size
        min_side = max(THUMBNAIL_SIZE, 224)
        started = time.monotonic()
        embedded = 0

        def prepare(plan: _Planned):
            copy_of = library.embedded_copy(plan.sha256, key)
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
            library.add_images(collection_id, key, rows)
            done += len(batch)
            embedded += len(fresh)
            rate = embedded / max(time.monotonic() - started, 1e-6)
            left = (total - done) / rate if rate > 0 else 0
            tick(f"{rate:.1f} images/s, about {left:.0f} s left")
            batch.clear()

        for plan, prep, error in _prefetch(prepare, to_embed, workers=2, window=2 * batch_size):
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
            # Files gone from the folders indexed (renames were followed above) leave the library.
            gone = []
            for folder in folders:
                gone += [
                    f.id
                    for p, f in library.stored_files(collection_id, under=str(folder)).items()
                    if p not in seen
                ]
            report.removed = library.remove_media(gone)
        else:
            batch.clear()
        library.save_index(key, self.embedder.dim)
        tick("done")
        return report

    def _fail(
        self,
        collection_id: int,
        cand: Candidate,
        reason: str,
        size: int | None,
        mtime: float | None,
        report: IndexReport,
    ) -> None:
        self.library.record_failure(collection_id, str(cand.path), cand.name, reason, size, mtime)
        report.failed.append(
            FailedFile(str(cand.path) if cand.name == cand.path.name else cand.name, reason)
        )


def index_report_lines(report: IndexReport) -> list[str]:
    """A human summary of a run, one line per fact, failures with their reasons."""
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
        )
        if n
    ]
    lines = [
        f"Collection '{report.collection}': " + (", ".join(parts) if parts else "nothing to do")
    ]
    if report.interrupted:
        lines.append("Stopped before the end: run it again to resume.")
    lines += [f"  failed: {f.path}: {f.reason}" for f in report.failed]
    return lines
