"""The video commands: `caption`, `ask` and `summarize`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.parser import is_web_link
from core.cli.progress import _ProgressLine, printable
from core.config import Settings
from core.errors import ConfigError, FramescopeError, MediaError
from core.format import format_timestamp
from core.types import Sampling


def cmd_caption(args, settings: Settings) -> int:
    from core.captions import (
        caption_video,
        check_video_file,
        default_export_dir,
        export_captions,
    )
    from core.indexing import Indexer
    from core.library import Library
    from core.models.captioner import load_captioner
    from core.models.clip import load_clip

    if args.every <= 0 or args.max_frames < 1:
        raise ConfigError("--every must be positive and --max-frames at least 1")
    link = is_web_link(args.video)
    video = Path(args.video).expanduser()
    if link:
        from core.fetch import normalize_link

        normalize_link(args.video, settings)  # a refused link: before any model is loaded
    elif not video.is_file():
        raise MediaError(args.video, "no such file")
    else:
        check_video_file(video)  # a photo or a document: refused before any work
    captioner = load_captioner(settings)
    captioner.check_prompt(args.prompt)  # a prompt too long for the model: likewise
    library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    embedder = load_clip(settings)
    sampling = Sampling(every=args.every, max_frames=args.max_frames, scenes=args.scenes, dedup=1.0)
    indexer = Indexer(library, embedder, settings)
    name = None
    try:
        if link:  # fetched and indexed (once), then captioned as that library video
            record = indexer.index_link(
                args.video, args.collection, sampling=sampling, job=_ProgressLine().job
            )
            video, name = Path(record.path), record.name
        result = caption_video(
            library,
            indexer,
            captioner,
            video,
            sampling=sampling,
            prompt=args.prompt,
            collection=args.collection,
            name=name,
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
        print(f"{format_timestamp(frame.timestamp):>9}  {printable(frame.text)}")
    print("\nSegments:")
    for segment in result.segments:
        print(f"  {printable(segment.label)}")
    print(f"\nCaption: {printable(result.overall)}")
    if result.note:
        print(f"Note: {printable(result.note)}")
    print(f"Saved to {printable(out)}")
    return 0


def cmd_ask(args, settings: Settings) -> int:
    from core.models.clip import load_clip
    from core.models.vlm import load_vlm
    from core.qa import FRAMES, QUESTION, UNIFORM, ask

    if args.frames < 1:
        raise ConfigError("--frames must be at least 1")
    video, name = Path(args.video).expanduser(), None
    link = is_web_link(args.video)
    if link:
        from core.fetch import normalize_link

        normalize_link(args.video, settings)  # a refused link: before any model is loaded
    elif not video.is_file():
        raise MediaError(args.video, "no such file")
    embedder = load_clip(settings)
    if link:  # fetched and indexed (once) into the library, then asked about
        from core.indexing import Indexer
        from core.library import Library

        library = Library(settings.home, exact_search_limit=settings.exact_search_limit)
        record = Indexer(library, embedder, settings).index_link(
            args.video, args.collection, job=_ProgressLine().job
        )
        video, name = Path(record.path), record.name
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
            print(printable(result.text))
            print(_frames_line(result))
        return 0
    print(
        f"Ask about {printable(name or video.name)} ({len(frames.images)} frames decoded). "
        "Type exit to leave."
    )
    return _chat(answer)


def _chat(answer, read=input) -> int:
    """The `ask` session: a question at a time until exit, end of input or Ctrl-C at the prompt.

    `answer(question, history)` gives an Answer. A failed question, or Ctrl-C while it is being
    answered, ends that answer only: the session goes back to the prompt."""
    history: list = []
    while True:
        try:
            question = read("Question> ").strip()
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
            print(f"error: {printable(exc)}", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the session
            print("\n(answer stopped)", flush=True)
            continue
        history.append(result)
        print(printable(result.text))
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
    from core.fetch import link_scheme

    scheme = link_scheme(args.source)
    if "://" in args.source or (scheme and not Path(args.source).expanduser().is_file()):
        # fetch_video refuses what is not an http(s) link (data:, javascript:...), saying so
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
    from core.export import inert_text

    print(inert_text(f"{summary.title}\n\n{summary.short}\n"))
    for chapter in summary.chapters:
        print(inert_text(f"{chapter.citation} {chapter.title}\n    {chapter.summary}"))
    if summary.note:
        print(inert_text(f"\nNote: {summary.note}"))
    return 0
