"""Videos from web links into the library: fetched safely once, then indexed like files.

A link goes through core.fetch (its refusals, caps, progress and Stop, and its download cache);
the downloaded video is indexed with its title as its name and the link recorded in its row, so
the same link given again finds it in the collection without fetching or indexing anything.
A playlist or channel link is first listed (core.fetch.list_link_items) and each of its videos is
indexed in turn, one failing without stopping the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import FramescopeError, MediaError
from core.fetch import check_url, fetch_video, list_link_items, normalize_link
from core.format import format_size
from core.indexing.files import Candidate
from core.jobs import Job, Step, job_or_new
from core.types import FailedFile, IndexReport, MediaRecord, Sampling

if TYPE_CHECKING:
    from core.indexing.indexer import Indexer

_COUNTS = ("added", "updated", "unchanged", "renamed", "reused", "frames", "duplicates")


def known_link(indexer: Indexer, url: str, collection: str) -> MediaRecord | None:
    """The video indexed from this (normalised) link in the collection, when it is fully indexed
    and its file is still there; else None."""
    rows = indexer.library.catalog.media(collection=collection, url=url, status="ok")
    return next((r for r in rows if r.kind == "video" and Path(r.path).is_file()), None)


def index_link(
    indexer: Indexer,
    url: str,
    collection: str = "web",
    *,
    sampling: Sampling | None = None,
    job: Job | None = None,
    name: str | None = None,
) -> tuple[MediaRecord, IndexReport | None]:
    """Fetch the video of a web link and index it into a collection: (its library row, the
    indexing run's report, or None when the link was in the collection already).

    The fetch is core.fetch's (`job.stage("download")`: the same refusals, caps, progress and
    Stop, and a link downloaded before is not downloaded again); the video is indexed
    (`job.stage("index")`) with its title as its name (`name` instead, when given) and the link
    recorded in its row. A link already fully indexed in that collection is returned without
    fetching or indexing anything. Raises MediaError naming the link and the reason
    (AccessDenied for a host this deployment does not fetch from); stopped, what was stored is
    kept and the same call continues.
    """
    job = job_or_new(job)
    clean = normalize_link(url, indexer.settings)
    known = known_link(indexer, clean, collection)
    if known is not None:
        job.report(1, 1, f"already in the library: {known.name}")
        return known, None
    fetched = fetch_video(clean, indexer.settings, job=job.stage("download"))
    title = (name or fetched.title or fetched.path.stem).strip() or fetched.path.stem
    candidate = Candidate(fetched.path, title, url=clean)
    report = indexer._run(
        [candidate], [], IndexReport(collection=collection), sampling, job.stage("index")
    )
    if report.failed:
        raise MediaError(clean, report.failed[0].reason)
    if report.interrupted:
        raise MediaError(
            clean, "stopped before the video was indexed; give the link again to continue"
        )
    rows = indexer.library.catalog.media(collection=collection)
    record = next((r for r in rows if r.path == str(fetched.path)), None)
    if record is None:
        raise MediaError(clean, "the video is not in the library after indexing")
    if record.status == "failed":  # failed before and unchanged since: the same reason again
        raise MediaError(clean, record.error or "the video cannot be indexed")
    if record.url is None:  # indexed before from the file itself: now known by its link too
        indexer.library.ingest.link(record.id, clean, title)
        record = next(r for r in indexer.library.catalog.media(url=clean) if r.id == record.id)
    return record, report


def index_links(
    indexer: Indexer,
    urls: Sequence[str],
    collection: str = "web",
    *,
    sampling: Sampling | None = None,
    job: Job | None = None,
) -> IndexReport:
    """Index every video of some web links into a collection.

    A link to a video gives itself; a playlist, channel or page with several videos gives its
    first FRAMESCOPE_FETCH_MAX_ITEMS videos (listed without downloading, core.fetch
    list_link_items). Each video is fetched and indexed as by index_link (under its listed title),
    with its own progress line, "2/3 <title>: downloading…"; one that fails is in
    `report.failed` with its reason and the rest go on. A refused link (its form, host or
    addresses) raises MediaError or AccessDenied before anything is done.
    """
    job = job_or_new(job)
    settings = indexer.settings
    report = IndexReport(collection=collection)
    # Every link is checked before anything is done: a refused one (its form, its host, its
    # addresses) raises here, as a missing file does for Indexer.index. A link whose video is in
    # the collection already is not looked up at all (it is used as it is, even offline).
    cleaned = [normalize_link(url, settings) for url in urls]
    known = {clean: known_link(indexer, clean, collection) for clean in cleaned}
    for url, clean in zip(urls, cleaned, strict=True):
        if known[clean] is None:
            check_url(url, settings)
    items: list[tuple[str, str, bool]] = []  # (link, title, whether the title names the video)
    for clean in cleaned:
        if job.stopped:
            report.interrupted = True
            return report
        if known[clean] is not None:  # a video indexed from this very link: nothing to list
            items.append((clean, known[clean].name, False))
            continue
        job.report(0, None, f"reading {clean}")
        try:
            listed = list_link_items(
                clean, settings, settings.fetch.max_items, job=job.stage("list")
            )
        except FramescopeError as exc:
            if job.stopped:
                report.interrupted = True
                return report
            report.failed.append(FailedFile(clean, getattr(exc, "reason", str(exc))))
            continue
        items += [
            (link, title, link != clean)  # a single video is named by its own page, as fetched
            for link, title in listed
            if all(link != seen for seen, _, _ in items)
        ]
    total = len(items)
    for number, (link, title, names) in enumerate(items, 1):
        if job.stopped:
            report.interrupted = True
            break
        label = f"{number}/{total} {title}"
        item_job = Job(_item_progress(job, number - 1, total, label), lambda: job.stopped)
        try:
            record, run = index_link(
                indexer,
                link,
                collection,
                sampling=sampling,
                job=item_job,
                name=title if names else None,
            )
        except FramescopeError as exc:
            if job.stopped:
                report.interrupted = True
                break
            reason = getattr(exc, "reason", str(exc))
            report.failed.append(FailedFile(link if title == link else f"{title} ({link})", reason))
            job.report(number, total, f"{label}: failed: {reason}")
            continue
        if run is None:
            report.unchanged += 1
        else:
            for count in _COUNTS:
                setattr(report, count, getattr(report, count) + getattr(run, count))
            report.warnings += run.warnings
        outcome = "already in the library" if run is None else "done"
        job.report(number, total, f"{number}/{total} {record.name}: {outcome}")
    job.report(total, total or None, "done")
    return report


def _item_progress(job: Job, before: int, total: int, label: str):
    """A listener that reports an item's steps as the whole run's: "2/3 <title>: downloading…"."""

    def show(step: Step) -> None:
        part = (
            min(step.fraction or 0.0, 1.0) / 2
        )  # the download is its first half, indexing the rest
        done = before + min(part + (0.5 if step.stage == "index" else 0.0), 0.99)
        job.report(done, total, f"{label}: {link_step_text(step)}")

    return show


def link_step_text(step: Step) -> str:
    """A step of index_link as people read it: "downloading… 1.2 MB of 1.9 MB", "indexing… 16/30
    frames, …", "already downloaded", "already in the library: <title>"."""
    if step.stage == "download":
        if step.message.startswith("already downloaded"):
            return "already downloaded"
        if step.message.startswith("downloaded "):
            return "downloaded"
        if step.message.startswith("downloading"):
            size = f" {format_size(step.done)}" if step.done else ""
            share = f" of {format_size(step.total)}" if step.total and step.done else ""
            return f"downloading…{size}{share}"
        return step.message
    if step.stage == "index":
        detail = step.message.rsplit(": ", 1)[-1]
        return "indexing…" if detail in ("done", "checking files") else f"indexing… {detail}"
    return step.message
