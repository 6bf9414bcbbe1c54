"""The `framescope` command line, over the same library functions as the app."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core import __version__
from core.config import PROFILES, Settings
from core.errors import ConfigError, FramescopeError, MediaError
from core.format import format_size, format_timestamp
from core.jobs import Job, Step
from core.types import IndexReport, Sampling, SearchResult


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framescope",
        description="Search, classify and understand images and video with vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"framescope {__version__}")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        help="model profile (default: FRAMESCOPE_PROFILE or 'default'); 'tiny' runs offline on random weights",
    )
    parser.add_argument("--home", type=Path, help="data directory (default: FRAMESCOPE_HOME)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "index", help="add image and video files or folders (recursively) to the library"
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="videos: seconds between sampled frames (default: FRAMESCOPE_FRAME_EVERY or 1)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        metavar="N",
        help="videos: at most N frames each (default: FRAMESCOPE_MAX_FRAMES or 7200)",
    )
    p.add_argument(
        "--scenes", action="store_true", help="videos: one frame per shot instead of by time"
    )
    p.add_argument(
        "--dedup",
        type=float,
        metavar="COS",
        help="videos: drop frames this similar to the last kept one (default 0.95; 1 keeps all)",
    )
    p.add_argument(
        "--collection",
        default="default",
        help="collection to add to (created if new; default: 'default')",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("search", help="search the library by text, by example image, or both")
    p.add_argument(
        "text",
        nargs="?",
        default="",
        metavar="TEXT",
        help='what to look for; +term adds, -term removes ("cat -dog +\\"red ball\\"")',
    )
    p.add_argument(
        "--image",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="example image (repeatable)",
    )
    p.add_argument(
        "--image-weight",
        type=float,
        default=0.5,
        metavar="W",
        help="share of the image part when text and image are both given (0..1, default 0.5)",
    )
    p.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="search only this collection (repeatable)",
    )
    p.add_argument(
        "--videos-only",
        action="store_true",
        help="search video frames only (prints video and timestamp)",
    )
    p.add_argument("--images-only", action="store_true", help="search images only")
    p.add_argument(
        "--captions",
        action="store_true",
        help="videos: also match frame captions (made by `caption`), fused with CLIP",
    )
    p.add_argument("--all", action="store_true", help="also print hits below the relevance cutoff")
    p.add_argument("--json", action="store_true", help="print hits as JSON")

    p = sub.add_parser(
        "caption", help="caption a video's sampled frames, merged into segments and one caption"
    )
    p.add_argument("video", type=Path, metavar="VIDEO")
    p.add_argument(
        "--every",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between frames (default 2)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=120,
        metavar="N",
        help="at most N frames, spread over the whole video (default 120)",
    )
    p.add_argument("--scenes", action="store_true", help="one frame per shot instead of by time")
    p.add_argument(
        "--prompt", default="", help='start every caption with this text, e.g. "a picture of"'
    )
    p.add_argument(
        "--collection", default="videos", help="collection the video is kept in (default 'videos')"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="results folder (default: FRAMESCOPE_HOME/exports/captions/<video>-<time>)",
    )
    p.add_argument("--json", action="store_true", help="print the captions as JSON")

    p = sub.add_parser(
        "ask", help="ask questions about a video (or an image) with a vision-language model"
    )
    p.add_argument("video", type=Path, metavar="VIDEO")
    p.add_argument("-q", "--question", help="ask once and exit (without it: an interactive prompt)")
    p.add_argument(
        "--frames",
        type=int,
        default=8,
        metavar="N",
        help="frames shown to the model per question (default 8)",
    )
    p.add_argument(
        "--uniform",
        action="store_true",
        help="spread frames evenly instead of choosing those that match the question",
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON (with -q)")

    p = sub.add_parser(
        "classify", help="zero-shot classify images (files or folders) among your labels"
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--labels", required=True, help='labels, comma separated ("car,truck,bus")')
    p.add_argument(
        "--templates",
        type=Path,
        metavar="FILE",
        help="prompt templates, one per line, with {} for the label",
    )
    p.add_argument(
        "--multi-label", action="store_true", help="score each label on its own against a threshold"
    )
    p.add_argument(
        "--threshold", type=float, default=0.5, help="multi-label threshold (default 0.5)"
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")

    p = sub.add_parser(
        "summarize", help="summarize a video from a URL (yt-dlp) or a file: chapters with times"
    )
    p.add_argument("source", metavar="URL_OR_PATH")
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="length of each described chunk (default 30)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=4,
        metavar="N",
        help="frames per chunk shown to the VLM (default 4)",
    )
    p.add_argument(
        "--scenes",
        action="store_true",
        help="one chunk per shot (long shots split) instead of fixed lengths",
    )
    p.add_argument(
        "--context",
        action="store_true",
        help="describe each chunk with a rolling context of what came before",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write summary.md, summary.json and chunks.csv there",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("status", help="show the library, the models and the settings")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


class _ProgressLine:
    """A job's progress on stderr: one rewritten line on a terminal, a line every few seconds
    otherwise. Its `job` goes to the work."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.job = Job(on_progress=self.show)

    def show(self, step: Step) -> None:
        now = time.monotonic()
        final = step.message == "done"
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        count = f"[{int(step.done)}/{int(step.total)}] " if step.total else ""
        stage = f"{step.stage}: " if step.stage else ""
        line = f"{count}{stage}{step.message}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(70) + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def cmd_index(args, settings: Settings) -> int:
    from core.indexing import Indexer, index_report_lines
    from core.library import Library
    from core.models.clip import load_clip

    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    for path in args.paths:
        if not path.expanduser().exists():
            raise MediaError(path, "no such file or folder")
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
        report = indexer.index(
            args.paths, args.collection, sampling=sampling, job=_ProgressLine().job
        )
    except KeyboardInterrupt:
        print(
            "\nInterrupted: everything indexed so far is kept; run the same command to resume.",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(index_report_lines(report)))
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
            f"{rank:3d}  {hit.score:.4f}  {hit.path}{when}  ({format_size(hit.size_bytes)}, {hit.collection})"
        )
    if not args.all and result.hidden_count:
        print(
            f"({result.hidden_count} more below the relevance cutoff {result.cutoff:.3f}; --all shows them)"
        )
    return 0


def cmd_caption(args, settings: Settings) -> int:
    from core.captions import caption_video, default_export_dir, export_captions
    from core.indexing import Indexer
    from core.library import Library
    from core.models.captioner import load_captioner
    from core.models.clip import load_clip

    if args.every <= 0 or args.max_frames < 1:
        raise ConfigError("--every must be positive and --max-frames at least 1")
    if not args.video.expanduser().is_file():
        raise MediaError(args.video, "no such file")
    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    embedder = load_clip(settings)
    captioner = load_captioner(settings)
    sampling = Sampling(every=args.every, max_frames=args.max_frames, scenes=args.scenes, dedup=1.0)
    try:
        result = caption_video(
            library,
            Indexer(library, embedder, settings),
            captioner,
            args.video.expanduser(),
            sampling=sampling,
            prompt=args.prompt,
            collection=args.collection,
            job=_ProgressLine().job,
        )
    except KeyboardInterrupt:
        print(
            "\nInterrupted: frames and captions so far are kept; run the same command to resume.",
            file=sys.stderr,
        )
        return 130
    out = export_captions(result, args.out or default_export_dir(settings.home, result))
    if args.json:
        print(json.dumps({**result.to_dict(), "folder": str(out)}, indent=2))
        return 0
    for frame in result.frames:
        print(f"{format_timestamp(frame.timestamp):>9}  {frame.text}")
    print("\nSegments:")
    for segment in result.segments:
        print(f"  {segment.label}")
    print(f"\nCaption: {result.overall}")
    if result.note:
        print(f"Note: {result.note}")
    print(f"Saved to {out}")
    return 0


def cmd_classify(args, settings: Settings) -> int:
    from core.indexing import scan_folder
    from core.media import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS
    from core.models.clip import load_clip
    from core.zeroshot import (
        DEFAULT_TEMPLATES,
        classify,
        embed_images,
        parse_labels,
        parse_templates,
    )

    files: list[Path] = []
    for path in args.paths:
        path = path.expanduser()
        if path.is_dir():
            files += [
                f
                for f in scan_folder(path)
                if f.suffix.lower() in IMAGE_EXTENSIONS | UNSUPPORTED_IMAGE_EXTENSIONS
            ]
        elif path.exists():
            files.append(path)
        else:
            raise MediaError(path, "no such file or folder")
    if args.templates is not None:
        try:
            templates = parse_templates(args.templates.read_text())
        except OSError as exc:
            raise ConfigError(
                f"cannot read templates from {args.templates}: {exc.strerror or exc}"
            ) from exc
    else:
        templates = DEFAULT_TEMPLATES
    embedder = load_clip(settings)
    labels, warnings = parse_labels(args.labels, embedder, templates)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    batch = embed_images(embedder, files, batch_size=settings.batch_size)
    for failed in batch.failed:
        print(f"failed: {failed.path}: {failed.reason}", file=sys.stderr)
    if not batch.names:
        raise MediaError(", ".join(str(p) for p in args.paths), "no image could be read")
    result = classify(
        embedder,
        batch.vectors,
        labels,
        templates,
        multi_label=args.multi_label,
        threshold=args.threshold,
    )
    values = result.scores if result.multi_label else result.probs
    if args.json:
        rows = []
        for i, name in enumerate(batch.names):
            row = {
                "path": name,
                "top": result.labels[int(np.argmax(values[i]))],
                "scores": dict(zip(result.labels, map(float, values[i].round(6)), strict=True)),
            }
            if result.multi_label:
                row["present"] = list(result.present_labels(i))
            rows.append(row)
        print(
            json.dumps(
                {
                    "labels": list(result.labels),
                    "mode": "multi-label" if result.multi_label else "single-label",
                    "results": rows,
                    "failed": [{"path": f.path, "reason": f.reason} for f in batch.failed],
                },
                indent=2,
            )
        )
        return 0
    for i, name in enumerate(batch.names):
        order = np.argsort(-values[i])[:3]
        best = ", ".join(f"{result.labels[j]} {values[i][j]:.2f}" for j in order)
        print(f"{name}: {best}")
    return 0


def cmd_ask(args, settings: Settings) -> int:
    from core.models.clip import load_clip
    from core.models.vlm import load_vlm
    from core.qa import FRAMES, QUESTION, UNIFORM, ask

    if args.frames < 1:
        raise ConfigError("--frames must be at least 1")
    video = args.video.expanduser()
    if not video.is_file():
        raise MediaError(args.video, "no such file")
    embedder = load_clip(settings)
    frames = FRAMES.get(video, embedder, settings)
    vlm = load_vlm(settings)
    selection = UNIFORM if args.uniform else QUESTION

    def answer(question: str, history):
        return ask(
            vlm,
            embedder,
            frames,
            question,
            history,
            n_frames=args.frames,
            selection=selection,
            max_new_tokens=settings.vlm_max_tokens,
        )

    if args.question is not None:
        result = answer(args.question, ())
        if args.json:
            used = [{"timestamp": f.timestamp} for f in result.frames]
            print(
                json.dumps(
                    {
                        "question": result.question,
                        "answer": result.text,
                        "frames": used,
                        "model": result.model,
                        "seconds": round(result.seconds, 3),
                    },
                    indent=2,
                )
            )
        else:
            print(result.text)
            print(_frames_line(result))
        return 0
    history: list = []
    print(f"Ask about {video.name} ({len(frames.images)} frames decoded). Type exit to leave.")
    while True:
        try:
            question = input("Question> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if question.lower() in ("exit", "quit"):
            return 0
        if not question:
            continue
        try:
            result = answer(question, history)
        except FramescopeError as exc:  # the session goes on after a failed question
            print(f"error: {exc}", file=sys.stderr)
            continue
        history.append(result)
        print(result.text)
        print(_frames_line(result))


def _frames_line(result) -> str:
    times = [format_timestamp(f.timestamp) for f in result.frames if f.timestamp is not None]
    return f"(frames at {', '.join(times)})" if times else f"({len(result.frames)} images)"


def cmd_summarize(args, settings: Settings) -> int:
    from core.library import Library
    from core.media import probe_video
    from core.models.llm import load_llm
    from core.models.vlm import load_vlm
    from core.summarize import CONTEXT, INDEPENDENT, descriptions_csv, summarize_video, to_markdown

    if args.chunk_seconds <= 0 or args.frames < 1:
        raise ConfigError("--chunk-seconds must be positive and --frames at least 1")
    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    title, cues = "", ()
    if args.source.startswith(("http://", "https://")) or "://" in args.source:
        from core.fetch import fetch_video

        fetched = fetch_video(
            args.source,
            settings,
            job=_ProgressLine().job.stage("download"),
        )
        path, title, cues = fetched.path, fetched.title, fetched.cues
    else:
        path = Path(args.source).expanduser()
        if not path.is_file():
            raise MediaError(args.source, "no such file")
    limits = settings.video
    info = probe_video(path, limits)
    vlm, llm = load_vlm(settings), load_llm(settings)

    try:
        summary = summarize_video(
            path,
            info,
            vlm,
            llm,
            library,
            title=title,
            source=args.source,
            cues=cues,
            chunk_seconds=args.chunk_seconds,
            frames_per_chunk=args.frames,
            scenes=args.scenes,
            mode=CONTEXT if args.context else INDEPENDENT,
            job=_ProgressLine().job,
        )
    except KeyboardInterrupt:
        print(
            "\nInterrupted: chunk descriptions so far are kept; run the same command to resume.",
            file=sys.stderr,
        )
        return 130
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "summary.md").write_text(to_markdown(summary))
            (args.out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
            (args.out / "chunks.csv").write_text(descriptions_csv(summary))
        except OSError as exc:
            raise ConfigError(f"cannot write to {args.out}: {exc.strerror or exc}") from exc
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    print(f"{summary.title}\n\n{summary.short}\n")
    for chapter in summary.chapters:
        print(f"{chapter.citation} {chapter.title}\n    {chapter.summary}")
    return 0


def cmd_status(args, settings: Settings) -> int:
    from core.library import Library
    from core.models import planned_models, resolve_device

    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    failed = library.catalog.failed_files()
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
        "counts": library.catalog.counts(),
        "embeddings_by_model": library.catalog.model_keys(),
        "collections": [c.__dict__ for c in library.catalog.collections()],
        "failed": [
            {"path": f.path, "name": f.name, "collection": f.collection, "reason": f.error}
            for f in failed
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"Data directory: {data['home']}")
    print(
        f"Profile: {settings.profile} ({'real weights' if data['real_weights'] else 'RANDOM weights: results are meaningless'}), device {data['device']}, mode {settings.mode}"
    )
    for model in planned_models(settings):
        print(f"{model.role}: {model.name} ({model.weights}, {model.device})")
    counts = data["counts"]
    print(
        f"Library: {counts['images']} images, {counts['videos']} videos, {counts['failed']} failed, in {counts['collections']} collections"
    )
    for c in library.catalog.collections():
        print(
            f"  {c.name}: {c.images} images, {c.videos} videos, {c.failed} failed, {format_size(c.bytes)}"
        )
    if failed:
        print("Failed files:")
        for f in failed:
            print(f"  {f.path}: {f.error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(profile=args.profile, home=args.home)
        handler = {
            "index": cmd_index,
            "search": cmd_search,
            "caption": cmd_caption,
            "ask": cmd_ask,
            "classify": cmd_classify,
            "summarize": cmd_summarize,
            "status": cmd_status,
        }[args.command]
        return handler(args, settings)
    except FramescopeError as exc:
        print(f"framescope: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
