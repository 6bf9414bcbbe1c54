"""Images into the library: loader threads prepare the next images while CLIP embeds a batch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.errors import MediaError
from core.indexing.files import _Planned, _prefetch
from core.library import NewImage
from core.library.ingest import MissingCopy
from core.media import (
    THUMBNAIL_SIZE,
    load_image,
    make_thumbnail,
)
from core.types import IndexReport

if TYPE_CHECKING:
    from core.indexing.indexer import Indexer


def embed_images(
    indexer: Indexer,
    plans: list[_Planned],
    collection_id: int,
    report: IndexReport,
    done: float,
    tick,
    stop,
) -> float:
    """Loader threads prepare images while the model runs on the previous batch."""
    library, key = indexer.library, indexer.embedder.key
    batch_size = indexer.settings.batch_size
    min_side = max(THUMBNAIL_SIZE, 224)
    started = time.monotonic()
    embedded = 0

    def prepare(plan: _Planned):
        copy_of = library.ingest.embedded_copy(plan.sha256, key)
        try:
            loaded = load_image(
                plan.candidate.path,
                name=str(plan.candidate.path),
                max_bytes=indexer.settings.max_image_bytes,
                max_pixels=indexer.settings.max_image_pixels,
                min_side=min_side,
            )
        except MediaError as exc:
            return plan, None, exc.reason
        tensor = indexer.embedder.preprocess(loaded.image) if copy_of is None else None
        return plan, (loaded, tensor, make_thumbnail(loaded.image), copy_of), None

    batch: list[tuple[_Planned, tuple]] = []

    def write() -> int:
        """Embed the batch's new images and write it all; the number embedded."""
        fresh = [(p, prep) for p, prep in batch if prep[3] is None]
        vectors = (
            indexer.embedder.embed_tensors(torch.stack([prep[1] for _, prep in fresh]))
            if fresh
            else np.empty((0, indexer.embedder.dim), np.float32)
        )
        by_plan = {id(p): v for (p, _), v in zip(fresh, vectors, strict=True)}
        rows = [
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
            for plan, (loaded, _, thumb, copy_of) in batch
        ]
        library.ingest.add_images(collection_id, key, rows)
        for plan, (_, _, _, copy_of) in batch:
            if copy_of is not None:
                report.reused += 1
            elif plan.replaces is not None:
                report.updated += 1
            else:
                report.added += 1
        return len(fresh)

    def flush() -> None:
        nonlocal done, embedded
        if not batch:
            return
        try:
            count = write()
        except MissingCopy:
            # Another run replaced every file of that content since this batch was planned (the
            # batch was not written): embed its copies too, rather than copy a vector.
            batch[:] = [
                (plan, (loaded, indexer.embedder.preprocess(loaded.image), thumb, None))
                if copy_of is not None
                else (plan, (loaded, tensor, thumb, copy_of))
                for plan, (loaded, tensor, thumb, copy_of) in batch
            ]
            count = write()
        done += len(batch)
        embedded += count
        rate = embedded / max(time.monotonic() - started, 1e-6)
        left = (len(plans) - embedded) / rate if rate > 0 else 0
        tick(f"{rate:.1f} images/s, about {left:.0f} s left", done)
        batch.clear()

    for plan, prep, error in _prefetch(prepare, plans, workers=2, window=2 * batch_size):
        if stop():
            report.interrupted = True
            break
        if error is not None:
            indexer._fail(collection_id, plan.candidate, error, plan.size, plan.mtime, report)
            done += 1
            continue
        batch.append((plan, prep))
        if len(batch) >= batch_size:
            flush()
    if not report.interrupted:
        flush()
    return done
