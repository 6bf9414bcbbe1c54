"""The library commands: `index`, `search` and `status`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from core.cli.progress import _ProgressLine, printable
from core.config import Settings
from core.errors import ConfigError, LibraryError, MediaError
from core.format import format_size, format_timestamp
from core.types import IndexReport, Sampling, SearchResult


def merge_reports(first: IndexReport, second: IndexReport) -> IndexReport:
    """One report of two runs into the same collection (files, then links)."""
    merged = IndexReport(collection=first.collection)
    for name, value in first.to_dict().items():
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(merged, name, value + getattr(second, name))
    merged.failed = [*first.failed, *second.failed]
    merged.warnings = [*first.warnings, *second.warnings]
    merged.interrupted = first.interrupted or second.interrupted
    return merged


def cmd_index(args, settings: Settings) -> int:
    from core.cli.parser import is_web_link
    from core.fetch import link_scheme, normalize_link
    from core.indexing import Indexer, index_report_lines
    from core.library import Library
    from core.models.clip import load_clip

    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    links, paths = [], []
    for raw in args.paths:  # links are fetched; the rest are files and folders
        if is_web_link(raw):
            normalize_link(raw, settings)  # a refused form or host, before loading models
            links.append(raw)
        elif Path(raw).expanduser().exists():
            paths.append(Path(raw).expanduser())
        else:
            scheme = link_scheme(raw)
            raise MediaError(
                raw,
                f"not a web link or a file: {scheme}: links cannot be indexed"
                if scheme
                else "no such file or folder",
            )
    base = settings.sampling
    if args.every is not None and args.every <= 0:
        raise ConfigError("--every must be a positive number of seconds")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    if args.dedup is not None and not 0 <= args.dedup <= 1:
        raise ConfigError("--dedup must be between 0 and 1")
    sampling = Sampling(
        every=args.every or base.every,
        max_frames=args.max_frames or base.max_frames,
        scenes=args.scenes,
        dedup=base.dedup if args.dedup is None else args.dedup,
    )
    embedder = load_clip(settings)
    indexer = Indexer(library, embedder, settings)
    report: IndexReport | None = None
    try:
        if paths:
            report = indexer.index(
                paths, args.collection, sampling=sampling, job=_ProgressLine().job
            )
        if links:
            fetched = indexer.index_links(
                links, args.collection, sampling=sampling, job=_ProgressLine(items=True).job
            )
            report = fetched if report is None else merge_reports(report, fetched)
    except KeyboardInterrupt:
        print(
            "\nInterrupted: everything indexed so far is kept; run the same command to resume.",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(printable(line) for line in index_report_lines(report)))
    return 0


def _search_with_captions(library, embedder, args, images) -> SearchResult:
    """Video frames ranked by reciprocal-rank fusion of caption text match and CLIP similarity."""
    from core.search import fuse_caption_scores, rank_frames

    if not args.text.strip():
        raise ConfigError("--captions needs search words")
    videos = [v.id for v in library.catalog.videos(args.collection)]
    ranking = rank_frames(
        library,
        embedder,
        args.text,
        media_ids=videos,
        images=images,
        image_weight=args.image_weight,
    )
    ranking = fuse_caption_scores(library, ranking, args.text)
    return SearchResult(
        hits=tuple(library.vectors.hits(ranking.top(args.k))), cutoff=None, query=args.text.strip()
    )


def cmd_search(args, settings: Settings) -> int:
    from core.export import hit_record
    from core.library import Library
    from core.media import load_image
    from core.models.clip import load_clip
    from core.search import search

    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    images = [
        load_image(
            p.expanduser(), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ).image
        for p in args.image
    ]
    if args.videos_only and args.images_only:
        raise ConfigError("--videos-only and --images-only exclude each other")
    kinds = ("video",) if args.videos_only else ("image",) if args.images_only else None
    embedder = load_clip(settings)
    if args.captions:
        result = _search_with_captions(library, embedder, args, images)
    else:
        result = search(
            library,
            embedder,
            args.text,
            images=images,
            image_weight=args.image_weight,
            k=args.k,
            collections=args.collection,
            kinds=kinds,
        )
    hits = result.hits if args.all else result.shown
    if args.json:
        print(
            json.dumps(
                {
                    "query": result.query,
                    "cutoff": result.cutoff,
                    "hidden": 0 if args.all else result.hidden_count,
                    "hits": [hit_record(h) for h in hits],
                },
                indent=2,
            )
        )
        return 0
    for rank, hit in enumerate(hits, 1):
        when = f"  at {format_timestamp(hit.timestamp)}" if hit.timestamp is not None else ""
        print(
            f"{rank:3d}  {hit.score:.4f}  {printable(hit.path)}{when}  ({format_size(hit.size_bytes)}, {printable(hit.collection)})"
        )
    if not args.all and result.hidden_count:
        print(
            f"({result.hidden_count} more below the relevance cutoff {result.cutoff:.3f}; --all shows them)"
        )
    return 0


def cmd_status(args, settings: Settings) -> int:
    from core.library import Library
    from core.library.db import damaged
    from core.models import planned_models, resolve_device

    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    problems = library.db.check()
    damage: LibraryError | None = damaged(library.db_path, problems[0]) if problems else None

    def read(part, empty):
        """A part of the report; on a damaged database, what can be read is still shown."""
        nonlocal damage
        try:
            return part()
        except LibraryError as exc:
            damage = damage or exc
            return empty

    failed = read(library.catalog.failed_files, [])
    collections = read(library.catalog.collections, [])
    data = {
        "home": str(settings.home),
        "profile": settings.profile,
        "device": resolve_device(settings.device),
        "mode": settings.mode,
        "clip": {"model": settings.clip_model, "pretrained": settings.clip_pretrained}
        if settings.profile == "default"
        else {"model": "framescope-tiny-clip", "pretrained": "random weights (tiny profile)"},
        "real_weights": settings.profile == "default",
        "models": [asdict(m) for m in planned_models(settings)],
        "integrity": {"check": "quick_check", "ok": not problems, "problems": problems},
        "counts": read(library.catalog.counts, None),
        "embeddings_by_model": read(library.catalog.model_keys, None),
        "collections": [c.__dict__ for c in collections],
        "failed": [
            {"path": f.path, "name": f.name, "collection": f.collection, "reason": f.error}
            for f in failed
        ],
    }
    if damage is not None:
        data["error"] = str(damage)
    if args.json:
        print(json.dumps(data, indent=2))
        if damage is not None:
            raise damage
        return 0
    print(f"Data directory: {printable(data['home'])}")
    print(
        f"Profile: {settings.profile} ({'real weights' if data['real_weights'] else 'RANDOM weights: results are meaningless'}), device {data['device']}, mode {settings.mode}"
    )
    for model in planned_models(settings):
        print(printable(f"{model.role}: {model.name} ({model.weights}, {model.device})"))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        print(printable(f"Database check: FAILED: {'; '.join(problems[:5])}{more}"))
    else:
        print("Database check: ok")
    counts = data["counts"]
    if counts is not None:
        print(
            f"Library: {counts['images']} images, {counts['videos']} videos, {counts['failed']} failed, in {counts['collections']} collections"
        )
    for c in collections:
        print(
            f"  {printable(c.name)}: {c.images} images, {c.videos} videos, {c.failed} failed, {format_size(c.bytes)}"
        )
    if failed:
        print("Failed files:")
        for f in failed:
            print(f"  {printable(f.path)}: {printable(f.error)}")
    if damage is not None:
        raise damage
    return 0
