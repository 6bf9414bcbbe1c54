"""Hardening of what Framescope writes out: exported files carry no control characters or bidi
overrides from model output, titles or file names; every CSV is protected against formulas; the
CLI says what a data: or javascript: input is; a truncated video's summary says it is truncated."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import require_media
from PIL import Image

from core.captions import FrameCaption, Segment, VideoCaptions, export_captions, to_srt, to_vtt
from core.cli import main
from core.export import (
    classification_to_csv,
    csv_cell,
    hits_to_csv,
    hits_to_json,
    inert_data,
    inert_text,
    rows_to_csv,
)
from core.summarize import Chapter, ChunkDescription, Summary, descriptions_csv, to_markdown
from core.types import Hit, SearchResult
from core.zeroshot import Classification

# What a model, a page title or a file name may carry: a terminal colour escape, a carriage return
# (which lets a line overwrite what came before in a terminal), a NUL, C1 controls, and the bidi
# override and isolates that make "gnp.exe" show as "exe.png".
EVIL = "red\x1b[31m alert\x1b[0m\rover\x00nul \x85\x9b1m \u202egnp.exe \u2066iso\u2069 \x7f end"
# C0 and C1 controls other than newline and tab, DEL, and the bidi embeddings/overrides/isolates.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text: str, *, csv_text: bool = False) -> None:
    """No forbidden character in an exported text (CSV rows may end with the format's CRLF)."""
    if csv_text:
        text = text.replace("\r\n", "\n")
    found = FORBIDDEN.findall(text)
    assert not found, f"control characters {found!r} in {text!r}"


def cells(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    for row in rows:
        for cell in row:
            assert "\r" not in cell and not FORBIDDEN.search(cell), cell
    return rows


# -- the helpers -----------------------------------------------------------------------------


def test_inert_text_removes_controls_and_bidi_overrides_and_keeps_the_words():
    assert inert_text(EVIL) == "red[31m alert[0m\novernul 1m gnp.exe iso  end"
    assert inert_text("a\r\nb\tc\nd") == "a\nb\tc\nd"
    assert inert_text("a\r\nb\tc\nd", keep="") == "a b c d"
    assert inert_text("é ü 日本 \u200f ok") == "é ü 日本 \u200f ok"  # ordinary text is kept
    assert inert_data({"k\x1b": ["\x00a", ("b\u202e",)], "n": 1.5, "z": None}) == {
        "k": ["a", ["b"]],
        "n": 1.5,
        "z": None,
    }


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\n=1"),
        ("\x00=1", "'=1"),  # the formula behind a removed control character is still caught
        ("\u202e=1", "'=1"),
        ("plain", "plain"),
        (-1.5, -1.5),
        (None, None),
    ],
)
def test_csv_cells_are_protected(value, cell):
    assert csv_cell(value) == cell


# -- CSV of zero-shot results, hits and labels ---------------------------------------------------


def _classification(labels: tuple[str, ...], multi_label: bool) -> Classification:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    extra = {}
    if multi_label:
        extra = {
            "multi_label": True,
            "scores": probs,
            "present": probs > 0.5,
            "threshold": 0.5,
            "scoring": "vs-neutral",
        }
    return Classification(labels, ("a photo of {}",), probs, probs, 100.0, **extra)


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_csv_quotes_formulas(multi_label):
    labels = ('=HYPERLINK("http://evil.example","cat")', "@dog")
    paths = ["=cmd|' /C calc'!A0", "+photo.jpg"]
    rows = cells(classification_to_csv(paths, _classification(labels, multi_label)))
    assert rows[1][0] == "'=cmd|' /C calc'!A0" and rows[2][0] == "'+photo.jpg"
    assert rows[1][1] == "'" + labels[0] and rows[2][1] == "'@dog"
    assert rows[1][2] == "0.700000"  # numbers are not touched
    if multi_label:
        assert rows[0][4] == "present" and rows[1][4] == "'" + labels[0]
        assert rows[2][4] == "'@dog"


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_csv_drops_controls(multi_label):
    labels = ("cat" + EVIL, "dog")
    paths = ["/photos/" + EVIL + ".jpg", "\x00=1.jpg"]
    text = classification_to_csv(paths, _classification(labels, multi_label))
    clean(text)
    rows = cells(text)
    assert rows[1][0] == "/photos/" + inert_text(EVIL) + ".jpg" and rows[2][0] == "'=1.jpg"
    assert rows[0][2] == "p(cat" + inert_text(EVIL) + ")" and rows[1][1] == "cat" + inert_text(EVIL)


def _hit(name: str, path: str) -> Hit:
    return Hit(7, 3, path, name, "video", "trip" + EVIL, 0.25, 1000, 640, 480, None, 1.5, 9)


def test_hit_and_label_csvs_and_json_drop_controls():
    hit = _hit("=clip" + EVIL + ".mp4", "/videos/" + EVIL + ".mp4")
    text = hits_to_csv([hit])
    clean(text, csv_text=True)
    rows = cells(text)
    assert rows[1][2] == "'=clip" + inert_text(EVIL) + ".mp4"
    data = hits_to_json(SearchResult((hit,), None, "query" + EVIL))
    clean(data)
    clean(json.dumps(json.loads(data), ensure_ascii=False))  # \u escapes decoded
    assert json.loads(data)["query"] == "query" + inert_text(EVIL)
    labels = rows_to_csv([{"video": EVIL, "path": "-x" + EVIL, "timestamp": 1.0, "label": "ok"}])
    clean(labels, csv_text=True)
    assert cells(labels)[1][1] == "'-x" + inert_text(EVIL)


# -- summaries -----------------------------------------------------------------------------------


def _summary() -> Summary:
    return Summary(
        "https://evil.example/" + EVIL,
        "Title " + EVIL,
        10.0,
        "independent",
        "Short " + EVIL,
        (Chapter(0.0, 10.0, "Chapter " + EVIL, "Chapter summary " + EVIL, (0,)),),
        (ChunkDescription(0, 0.0, 10.0, "=desc " + EVIL),),
        "vlm" + EVIL,
        "llm",
    )


def test_summary_exports_drop_controls():
    summary = _summary()
    markdown = to_markdown(summary)
    clean(markdown)
    assert "gnp\\.exe" in markdown and "\\[31m" in markdown  # the words stay, escaped
    data = json.dumps(summary.to_dict(), indent=2)
    clean(data)
    decoded = json.loads(data)
    clean(json.dumps(decoded, ensure_ascii=False))
    assert decoded["title"] == "Title " + inert_text(EVIL) and decoded["note"] is None
    text = descriptions_csv(summary)
    clean(text, csv_text=True)
    assert cells(text)[1][3] == "'=desc " + inert_text(EVIL)
    noted = replace(summary, note="note " + EVIL)
    clean(to_markdown(noted))
    assert json.loads(json.dumps(noted.to_dict()))["note"] == "note " + inert_text(EVIL)


# -- captions ------------------------------------------------------------------------------------


def _captions(tmp_path: Path) -> VideoCaptions:
    image = tmp_path / "frame.jpg"
    Image.new("RGB", (32, 24), (200, 40, 40)).save(image)
    text = "a box " + EVIL + "\n\n99\n00:00:00,000 --> 00:09:00,000\ninjected cue"
    frames = (FrameCaption(1, 0.0, text, str(image)), FrameCaption(2, 2.0, "plain", str(image)))
    return VideoCaptions(
        video="clip" + EVIL + ".mp4",
        path="/videos/clip" + EVIL + ".mp4",
        media_id=1,
        duration=4.0,
        model="tiny",
        prompt="",
        frames=frames,
        segments=(Segment(0.0, 2.0, text, 1), Segment(2.0, 4.0, "plain", 1)),
        overall=text,
        overall_method="m",
        note="note " + EVIL,
    )


def test_caption_exports_drop_controls(tmp_path):
    result = _captions(tmp_path)
    srt, vtt = to_srt(result), to_vtt(result)
    for text in (srt, vtt):
        clean(text)
        assert "\n\n99\n" not in text  # a blank line in a caption would end its cue early
    assert vtt.count(" --> ") == 2 and srt.count("\n\n") == 1  # two cues, one blank line between
    out = export_captions(result, tmp_path / "out")
    for file in sorted(out.iterdir()):
        if file.suffix in (".txt", ".json", ".srt", ".vtt"):
            text = file.read_text(encoding="utf-8")
            clean(text)
            if file.suffix == ".json":
                clean(json.dumps(json.loads(text), ensure_ascii=False))
    assert (out / "frame_01.txt").read_text().startswith("0:00.0 a box red[31m alert")
    assert (
        json.loads((out / "captions.json").read_text())["video"]
        == "clip" + inert_text(EVIL) + ".mp4"
    )


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "scheme"),
    [
        ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "data"),
        ("data:text/html,<script>alert(1)</script>", "data"),
        ("javascript:alert(1)", "javascript"),
        ("JAVASCRIPT:alert(1)", "javascript"),
    ],
)
def test_summarize_says_a_data_or_javascript_input_is_not_a_link_or_a_file(
    tmp_path, capsys, source, scheme
):
    code = main(["--profile", "tiny", "--home", str(tmp_path / "home"), "summarize", source])
    err = capsys.readouterr().err
    assert code == 1
    assert "no such file" not in err
    assert f"not a web link or a file: {scheme}: links cannot be fetched" in err
    assert source[:20] in err


def test_summarize_of_a_truncated_video_says_so(tmp_path, capsys):
    box = require_media("video") / "box.mp4"
    half = tmp_path / "half_box.mp4"
    data = box.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    base = ["--profile", "tiny", "--home", str(tmp_path / "home"), "summarize", str(half)]
    base += ["--chunk-seconds", "8", "--frames", "1"]
    out = tmp_path / "out"
    assert main([*base, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\nNote: only the part up to .*file truncated", printed), printed
    assert "file truncated" in json.loads((out / "summary.json").read_text())["note"]
    assert "\nNote: only the part up to" in (out / "summary.md").read_text()
    assert main([*base, "--json"]) == 0
    assert "file truncated" in json.loads(capsys.readouterr().out)["note"]
