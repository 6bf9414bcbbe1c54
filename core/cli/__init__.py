"""The `framescope` command line, over the same library functions as the app.

Modules:
    __init__   `main()`: parses the arguments and runs the chosen command
    __main__   `python -m core.cli`
    parser     the argument parser: the commands and their options
    progress   terminal output: printable() text, and a job's progress line on stderr
    library    the library commands: index, search, status
    video      the video commands: caption, ask, summarize
    classify   the classify command: zero-shot labels for images
    text       the ocr command: the text in images and video frames
"""

from __future__ import annotations

import sys

from core.cli.classify import cmd_classify
from core.cli.library import cmd_index, cmd_search, cmd_status
from core.cli.parser import _build_parser
from core.cli.progress import printable
from core.cli.text import cmd_ocr
from core.cli.video import cmd_ask, cmd_caption, cmd_summarize
from core.config import Settings
from core.errors import FramescopeError

__all__ = ["main"]


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
            "ocr": cmd_ocr,
            "status": cmd_status,
        }[args.command]
        return handler(args, settings)
    except FramescopeError as exc:
        print(f"framescope: error: {printable(exc)}", file=sys.stderr)
        return 1
