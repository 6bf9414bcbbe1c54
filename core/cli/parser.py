"""The `framescope` argument parser: the commands and their options."""

from __future__ import annotations

import argparse
from pathlib import Path

from core import __version__
from core.config import PROFILES


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
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, folders, and web links (a video, or a playlist or channel: its first "
        "FRAMESCOPE_FETCH_MAX_ITEMS videos)",
    )
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
    p.add_argument("video", metavar="VIDEO", help="a video file, or a web link to one")
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
    p.add_argument("video", metavar="VIDEO", help="a video or image file, or a web link to a video")
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
    p.add_argument(
        "--collection",
        default="web",
        help="collection a web link's video joins (default 'web')",
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

    p = sub.add_parser(
        "ocr", help="read the text in images, or in sampled frames of videos (RapidOCR)"
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image or video files")
    p.add_argument(
        "--every", type=float, default=2.0, metavar="S", help="seconds between video frames read"
    )
    p.add_argument("--json", action="store_true", help="print text, scores and boxes as JSON")

    p = sub.add_parser("status", help="show the library, the models and the settings")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def is_web_link(text: str) -> bool:
    """Whether an argument is an http(s) link (fetched) rather than a path."""
    from core.fetch import link_scheme

    return link_scheme(text) in ("http", "https")
