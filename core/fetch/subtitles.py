"""Subtitles: the cues of a WebVTT or SRT file (parse_vtt) and which language to download."""

from __future__ import annotations

import html
import re
from typing import Any

# =============================================================================================
# Subtitles
# =============================================================================================

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_vtt(text: str) -> tuple[tuple[float, float, str], ...]:
    """(start, end, text) cues of a WebVTT (or SRT) file, tags removed.

    Automatic captions repeat the previous cue's line in each cue (rolling captions); a line that
    was in the previous cue is not repeated.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[tuple[float, float, str]] = []
    previous: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.split("\n")
        at = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if at is None:
            continue
        match = _CUE_TIMING.match(lines[at])
        if not match:
            continue
        start = _seconds(*match.group(1, 2, 3, 4))
        end = _seconds(*match.group(5, 6, 7, 8))
        body = []
        for line in lines[at + 1 :]:
            clean = " ".join(html.unescape(_TAG.sub("", line)).split())
            if clean:
                body.append(clean)
        new = [line for line in body if line not in previous]
        previous = body
        if new and end >= start:
            cues.append((start, end, " ".join(new)))
    return tuple(cues)


def _pick_subtitle_language(info: dict) -> str | None:
    """English manual subtitles, else English automatic captions, else other manual subtitles."""

    def languages(pool: Any) -> list[str]:
        if not isinstance(pool, dict):
            return []
        return [
            lang
            for lang, tracks in pool.items()
            if lang != "live_chat"
            and isinstance(tracks, list)
            and any(isinstance(t, dict) and t.get("ext") == "vtt" for t in tracks)
        ]

    manual, automatic = languages(info.get("subtitles")), languages(info.get("automatic_captions"))
    for pool in (manual, automatic):
        for wanted in ("en", "en-orig"):
            if wanted in pool:
                return wanted
        english = sorted(lang for lang in pool if lang.lower().startswith("en"))
        if english:
            return english[0]
    if manual:
        return manual[0]
    original = [lang for lang in automatic if lang.endswith("-orig")]
    if original:
        return original[0]
    language = info.get("language")
    return language if language in automatic else None
