"""The ocr command: the text in images and in sampled frames of videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.progress import _ProgressLine, printable
from core.config import Settings
from core.errors import MediaError


def cmd_ocr(args, settings: Settings) -> int:
    """Print the text of each file (images whole, videos frame by frame); a file that cannot be
    read is named with its reason on stderr and the rest go on (exit 1 if none could be read)."""
    from core.format import format_timestamp
    from core.media import VIDEO_EXTENSIONS, load_image, probe_video
    from core.text import describe, load_text_reader

    if args.every <= 0:
        raise MediaError("--every", "must be a positive number of seconds")
    reader = load_text_reader()
    results, failed = [], []
    for path in args.paths:
        path = path.expanduser()
        try:
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                info = probe_video(path, settings.video)
                frames = list(reader.read_video(info, every=args.every, job=_ProgressLine().job))
                results.append({"path": str(path), "kind": "video", "frames": frames})
            else:
                image = load_image(
                    path, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
                ).image
                results.append({"path": str(path), "kind": "image", "lines": reader.read(image)})
        except MediaError as exc:
            failed.append({"path": str(path), "reason": exc.reason})
            print(f"framescope: {printable(exc)}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "files": [
                        {
                            "path": r["path"],
                            "kind": r["kind"],
                            "lines": [x.to_dict() for x in r["lines"]],
                        }
                        if r["kind"] == "image"
                        else {
                            "path": r["path"],
                            "kind": "video",
                            "frames": [
                                {"timestamp": f.timestamp, "lines": [x.to_dict() for x in f.lines]}
                                for f in r["frames"]
                            ],
                        }
                        for r in results
                    ],
                    "failed": failed,
                },
                indent=2,
            )
        )
    else:
        for r in results:
            if r["kind"] == "image":
                print(printable(describe(Path(r["path"]), r["lines"])))
                continue
            print(printable(f"{Path(r['path']).name}:"))
            for frame in r["frames"]:
                text = " | ".join(line.text for line in frame.lines) or "(no text)"
                print(printable(f"  {format_timestamp(frame.timestamp):>9}  {text}"))
    return 1 if failed and not results else 0
