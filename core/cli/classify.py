"""The `classify` command: zero-shot labels for images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from core.cli.progress import printable
from core.config import Settings
from core.errors import ConfigError, MediaError


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
        print(f"warning: {printable(warning)}", file=sys.stderr)
    batch = embed_images(embedder, files, batch_size=settings.batch_size)
    for failed in batch.failed:
        print(f"failed: {printable(failed.path)}: {printable(failed.reason)}", file=sys.stderr)
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
        best = ", ".join(f"{printable(result.labels[j])} {values[i][j]:.2f}" for j in order)
        print(f"{printable(name)}: {best}")
    return 0
