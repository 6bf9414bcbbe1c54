"""Videos in the library: indexing frames, frame search, collapsing, feedback re-ranking, labels."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_media

from core.errors import QueryError
from core.export import label_rows, rows_to_csv
from core.jobs import Job
from core.search import (
    HitGroup,
    collapse_hits,
    rank_frames,
    refine_frames,
    search,
)
from core.types import Hit, Sampling

EVERY_FRAME = Sampling(every=1.0, max_frames=1000, dedup=1.0)


@pytest.fixture(scope="module")
def videos():
    return require_media("video")


def _frames(library, media_id):
    return [
        r[0]
        for r in library.db.conn().execute(
            "SELECT timestamp FROM frames WHERE media_id = ? ORDER BY timestamp", (media_id,)
        )
    ]


def test_video_frames_indexed_with_timestamps(indexer, library, videos):
    report = indexer.index([videos / "dashcam_highway.mp4"], "clips", sampling=EVERY_FRAME)
    assert report.added == 1 and not report.failed and report.frames == 9
    (video,) = library.catalog.videos()
    assert video.name == "dashcam_highway.mp4" and video.status == "ok"
    assert (
        video.width == 960
        and video.height == 540
        and video.duration == pytest.approx(8.84, abs=0.1)
    )
    stamps = _frames(library, video.id)
    assert stamps == pytest.approx(list(range(9)), abs=0.05)
    # Again: nothing to do; with other sampling settings: sampled again.
    again = indexer.index([videos / "dashcam_highway.mp4"], "clips", sampling=EVERY_FRAME)
    assert again.unchanged == 1 and again.frames == 0
    wider = indexer.index(
        [videos / "dashcam_highway.mp4"], "clips", sampling=Sampling(every=2.0, dedup=1.0)
    )
    assert wider.updated == 1 and wider.frames == 5
    assert _frames(library, library.catalog.videos()[0].id) == pytest.approx(
        [0, 2, 4, 6, 8], abs=0.05
    )


def test_near_duplicates_dropped_on_fixed_camera(indexer, library, videos):
    report = indexer.index(
        [videos / "vtest.avi"], "clips", sampling=Sampling(every=1.0, dedup=0.95)
    )
    assert report.duplicates > 0
    assert report.frames + report.duplicates == 80  # 0..79 s
    kept = _frames(library, library.catalog.videos()[0].id)
    assert kept[0] == pytest.approx(0.0) and len(kept) == report.frames


def test_videos_only_search_returns_frames_with_timestamps(
    indexer, library, embedder, videos, shared_images
):
    indexer.index([videos / "box.mp4"], "clips", sampling=EVERY_FRAME)
    indexer.index(shared_images[:5], "photos")
    result = search(library, embedder, "a box on a desk", k=50, kinds=("video",))
    assert result.hits and all(
        h.kind == "video" and h.timestamp is not None and h.frame_id for h in result.hits
    )
    everything = search(library, embedder, "a box on a desk", k=50)
    assert {h.kind for h in everything.hits} == {"image", "video"}
    # The frame itself comes first for its own embedding.
    target = result.hits[3]
    like = search(library, embedder, "", like=[target.embedding_id], k=3, kinds=("video",))
    assert like.hits[0].embedding_id == target.embedding_id and like.hits[0].score == pytest.approx(
        1.0, abs=1e-5
    )


def test_collapse_adjacent_hits_into_the_best():
    def hit(eid, media, t, score):
        return Hit(eid, media, "v.mp4", "v.mp4", "video", "c", score, 1, 1, 1, None, t, eid)

    hits = [
        hit(1, 7, 10.0, 0.9),
        hit(2, 7, 11.0, 0.95),
        hit(3, 7, 12.0, 0.8),
        hit(4, 7, 40.0, 0.85),
        hit(5, 8, 11.0, 0.7),
    ]
    hits.sort(key=lambda h: -h.score)  # ranked, as a search returns them
    groups = collapse_hits(hits, window=2.5)
    assert [g.best.embedding_id for g in groups] == [2, 4, 5]
    assert groups[0].more == 2 and [h.embedding_id for h in groups[0].members] == [1, 2, 3]
    assert isinstance(groups[0], HitGroup)
    # Vectors that differ (a cut between shots) keep the hits apart.
    vectors = {i: np.eye(6, dtype=np.float32)[i] for i in range(1, 6)}
    assert len(collapse_hits(hits, window=2.5, vectors=vectors)) == 5


def test_feedback_reranks_the_scope_and_exports_labels(indexer, library, embedder, videos):
    indexer.index(
        [videos / "vtest.avi", videos / "dashcam_highway.mp4"], "clips", sampling=EVERY_FRAME
    )
    ids = [v.id for v in library.catalog.videos()]
    ranking = rank_frames(library, embedder, "pedestrians on a street", media_ids=ids)
    assert len(ranking.ids) == 80 + 9
    assert np.allclose(ranking.scores, ranking.scores)  # all finite
    dashcam = next(v.id for v in library.catalog.videos() if v.name == "dashcam_highway.mp4")
    dash_frames = ranking.ids[ranking.media_ids == dashcam]
    marks = {int(dash_frames[0]): 1, int(dash_frames[1]): 1}
    before = [eid for eid, _ in ranking.top(20)]
    refined = refine_frames(
        library,
        embedder.key,
        ranking,
        ranking.scores,
        marks,
        method="propagation",
        prior_weight=0.0,
    )
    after = [eid for eid, _ in refined.top(20)]
    assert after != before
    assert set(after[:2]) == set(marks)  # marked frames come first
    # Label propagation lifts the rest of the marked video: most of the new top 9 are dashcam frames.
    top9_media = [int(refined.media_ids[np.flatnonzero(refined.ids == e)[0]]) for e in after[:9]]
    assert top9_media.count(dashcam) >= 7
    rocchio = refine_frames(library, embedder.key, ranking, ranking.scores, marks, method="rocchio")
    assert [e for e, _ in rocchio.top(2)] != before[:2] or set(before[:2]) == set(marks)
    rows = label_rows(library, marks)
    assert [r["label"] for r in rows] == ["relevant", "relevant"] and rows[0][
        "timestamp"
    ] == pytest.approx(0.0)
    assert rows_to_csv(rows).splitlines()[0] == "video,path,timestamp,frame_id,embedding_id,label"
    with pytest.raises(QueryError, match="mark at least one"):
        refine_frames(library, embedder.key, ranking, ranking.scores, {}, method="propagation")


def test_stopped_video_resumes_to_the_same_frames(tmp_path, embedder, videos):
    from conftest import tiny_settings

    from core.indexing import Indexer
    from core.library import Library

    def run(home, stop_after=None):
        settings = tiny_settings(home)
        library = Library(home)
        calls = {"n": 0}

        def should_stop():
            calls["n"] += 1
            return stop_after is not None and calls["n"] > stop_after

        report = Indexer(library, embedder, settings).index(
            [videos / "box.mp4"], "c", sampling=EVERY_FRAME, job=Job(should_stop=should_stop)
        )
        return library, report

    library, report = run(tmp_path / "a", stop_after=6)
    assert report.interrupted
    (partial,) = library.catalog.videos()
    assert partial.status == "partial" and 0 < library.catalog.frame_count(partial.id) < 16
    library, report = run(tmp_path / "a")
    assert not report.interrupted and library.catalog.videos()[0].status == "ok"
    reference, _ = run(tmp_path / "b")
    assert _frames(library, library.catalog.videos()[0].id) == _frames(
        reference, reference.catalog.videos()[0].id
    )


def test_truncated_video_keeps_decoded_frames_and_says_so(indexer, library, videos, tmp_path):
    data = (videos / "vtest.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    report = indexer.index([cut], "clips", sampling=EVERY_FRAME)
    assert report.added == 1 and not report.failed
    (warning,) = report.warnings
    assert "cut.avi" in warning.path and warning.reason.startswith("kept ")
    (video,) = library.catalog.videos()
    assert video.note and video.note.startswith("kept ")
    assert 10 < library.catalog.frame_count(video.id) < 80


def test_bad_videos_are_failed_and_the_library_is_unchanged(indexer, library, videos, tmp_path):
    indexer.index([videos / "realshort.mp4"], "clips", sampling=EVERY_FRAME)
    before = library.catalog.counts(indexer.embedder.key)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.mp4").write_text("just some text")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "list.mp4").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/hostname\n#EXT-X-ENDLIST\n"
    )
    report = indexer.index([folder], "bad")
    reasons = {os.path.basename(f.path): f.reason for f in report.failed}
    assert set(reasons) == {"notes.mp4", "empty.mp4", "list.mp4"}
    assert "empty" in reasons["empty.mp4"]
    after = library.catalog.counts(indexer.embedder.key)
    assert after["embeddings"] == before["embeddings"] and after["videos"] == before["videos"]
    assert after["failed"] == before["failed"] + 3


def test_cli_videos_only_prints_video_and_timestamp(tmp_path, videos):
    env = {
        **os.environ,
        "FRAMESCOPE_HOME": str(tmp_path / "home"),
        "FRAMESCOPE_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
    }
    exe = shutil.which("framescope", path=os.path.dirname(sys.executable)) or "framescope"
    done = subprocess.run(
        [
            exe,
            "index",
            str(videos / "dashcam_highway.mp4"),
            "--every",
            "2",
            "--dedup",
            "1",
            "--collection",
            "clips",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "5 video frames stored" in done.stdout or "video frames stored" in done.stdout
    out = subprocess.run(
        [exe, "search", "cars on a highway", "--videos-only", "--json", "-k", "3", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert len(hits) == 3 and all(h["kind"] == "video" and h["timestamp"] is not None for h in hits)
    text = subprocess.run(
        [exe, "search", "cars", "--videos-only", "-k", "2", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "dashcam_highway.mp4  at 0:0" in text.stdout
    with sqlite3.connect(tmp_path / "home" / "library.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 5


def _chart_strings(fig) -> list[str]:
    """The strings of a figure's data and layout, decoded from its JSON, hover templates aside."""
    out: list[str] = []

    def walk(value):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in ("hovertemplate", "texttemplate"):
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(fig.to_json()))
    return out


def test_timeline_shows_an_html_video_name_as_text(indexer, library, embedder, videos, tmp_path):
    from ui.components import timeline_figure

    evil = tmp_path / '<a href="https:evil.example">x<b>bold.mp4'
    shutil.copyfile(videos / "dashcam_highway.mp4", evil)
    indexer.index([evil], "clips", sampling=EVERY_FRAME)
    names = {v.id: v.name for v in library.catalog.videos()}
    assert list(names.values()) == [evil.name]
    ranking = rank_frames(library, embedder, "cars", media_ids=list(names))
    fig = timeline_figure(ranking, names, {int(ranking.ids[0]): 1})
    strings = _chart_strings(fig)
    assert not [s for s in strings if "<a" in s or "<b" in s]
    assert '&lt;a href="https:evil.example"&gt;x&lt;b&gt;bold.mp4' in strings


# -- what the Frame search page shows -----------------------------------------------------------


def _record(media_id, name, collection, path, **extra):
    from core.types import MediaRecord

    fields = dict(status="ok", error=None, sha256="s", size_bytes=1, width=1, height=1)
    fields.update(thumbnail=None, duration=15.2)
    fields.update(extra)
    return MediaRecord(media_id, collection, path, name, "video", **fields)


def test_video_labels_tell_same_named_videos_apart_and_say_what_is_wrong():
    from ui.components import video_chart_names, video_choice_labels

    videos = [
        _record(1, "box.mp4", "holiday", "/a/box.mp4"),
        _record(2, "box.mp4", "work", "/b/box.mp4"),
        _record(3, "box.mp4", "work", "/c/box.mp4"),  # same name, same collection: its folder
        _record(
            4,
            "cut.avi",
            "clips",
            "/d/cut.avi",
            note="kept 40 frames; decoding stopped at 39.8 s of 79.5 s: file truncated or corrupt",
        ),
        _record(5, "half.mp4", "clips", "/d/half.mp4", status="partial"),
    ]
    labels = video_choice_labels(videos)
    assert len(set(labels.values())) == 5
    assert labels[1].startswith("box.mp4 · holiday · ")
    assert labels[2].startswith("box.mp4 · work · ") and labels[2].endswith("in b")
    assert labels[3].endswith("in c")
    assert "truncated: frames up to 0:39.8" in labels[4]
    assert "partly indexed" in labels[5]
    names = video_chart_names(videos)
    assert names[1] == "box.mp4 · holiday" and len(set(names.values())) == 5


def test_scope_summary_counts_videos_and_images_apart():
    from core.search import FrameRanking
    from ui.components import scope_summary

    nan = float("nan")
    ranking = FrameRanking(
        "q",
        np.zeros(4, np.float32),
        np.arange(6),
        np.array([1, 1, 2, 7, 8, 9]),
        np.array([0.0, 1.0, 0.0, nan, nan, nan]),
        np.zeros(6, np.float32),
    )
    assert scope_summary(ranking) == "2 videos (3 frames) and 3 images"
    one = FrameRanking(
        "q", np.zeros(4), np.arange(1), np.array([1]), np.array([0.0]), np.zeros(1, np.float32)
    )
    assert scope_summary(one) == "1 video (1 frame)"


def test_map_legend_stays_clear_of_the_colour_bar():
    from core.search import FrameRanking
    from ui.components import map_figure

    ranking = FrameRanking(
        "q",
        np.zeros(4, np.float32),
        np.arange(5),
        np.ones(5, np.int64),
        np.arange(5, dtype=float),
        np.linspace(0, 1, 5).astype(np.float32),
    )
    points = np.random.default_rng(0).standard_normal((5, 2))
    fig = map_figure(points, ranking, {0: 1, 1: -1})
    assert fig.data[0].marker.colorbar.title.text == "score"  # the colour bar: on the right
    legend = fig.layout.legend
    # The legend runs across below the plot, never in the right margin where the colour bar is.
    assert legend.orientation == "h" and legend.y is not None and legend.y < 0
