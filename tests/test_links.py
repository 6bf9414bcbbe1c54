"""Web links in the library: a video fetched from a link (core.fetch, on a local server) joins the
library with its link, title and duration, once; playlists give each of their videos; the command
line takes links where it takes files. Every server here runs on 127.0.0.1, reached with the
test-only loopback setting; nothing leaves the machine."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest import MEDIA, db_query, run_cli, tiny_settings

from core.config import FetchSettings
from core.errors import MediaError
from core.fetch import list_link_items
from core.indexing import Indexer
from core.jobs import Job
from core.library import Library
from core.library.db import MIGRATIONS, SCHEMA_VERSION, _split_sql
from core.types import Sampling

BOX = MEDIA / "video" / "box.mp4"  # 15.18 s, 640x480
SHORT = MEDIA / "video" / "realshort.mp4"
FAST = Sampling(every=5.0, max_frames=10, dedup=1.0)


def _page(title: str, *videos: str) -> bytes:
    tags = "".join(f'<video src="{v}" controls></video>\n' for v in videos)
    return f"<!doctype html><html><head><title>{title}</title></head><body>\n{tags}</body></html>".encode()


PAGES = {
    "/one.html": _page("A box on a table", "/box.mp4"),
    "/three.html": _page("Three clips", "/box.mp4", "/short.mp4", "/missing.mp4"),
    "/many.html": _page("Many clips", *(f"/clip{i}.mp4" for i in range(1, 5))),
}
FILES = {"/box.mp4": BOX, "/short.mp4": SHORT, **{f"/clip{i}.mp4": SHORT for i in range(1, 5)}}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.hits.append(path)
        if path in FILES:
            body, kind = FILES[path].read_bytes(), "video/mp4"
        elif path in PAGES:
            body, kind = PAGES[path], "text/html; charset=utf-8"
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def count(self, *paths: str) -> int:
        with self.lock:
            return sum(self.hits.count(p) for p in paths) if paths else len(self.hits)


@pytest.fixture(scope="module")
def server():
    if not (BOX.is_file() and SHORT.is_file()):
        pytest.skip(f"shared media not found at {BOX.parent}")
    srv = _Server()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _settings(home: Path, **fetch):
    return tiny_settings(
        home, fetch=FetchSettings(**{"allow_loopback": True, "timeout": 10, **fetch})
    )


@pytest.fixture
def web(tmp_path, embedder):
    """An indexer whose fetches may reach 127.0.0.1 (and nothing else private)."""
    settings = _settings(tmp_path / "home")
    library = Library(settings.home)
    yield Indexer(library, embedder, settings)
    library.close()


def _media(home: Path) -> list[tuple]:
    return db_query(
        home / "library.db",
        "SELECT m.name, m.url, m.kind, m.status, m.duration, c.name, m.error "
        "FROM media m JOIN collections c ON c.id = m.collection_id ORDER BY m.id",
    )


# -- core --------------------------------------------------------------------------------------


def test_a_link_joins_the_library_with_its_title_and_duration_once(web, server):
    page, direct = server.url("/one.html"), server.url("/box.mp4")
    record = web.index_link(page, sampling=FAST)
    assert record.collection == "web" and record.kind == "video" and record.status == "ok"
    assert record.url == page and record.name == "A box on a table"  # the page's title
    assert record.duration == pytest.approx(15.18, abs=0.1)
    assert Path(record.path).parent == web.settings.home / "downloads"
    assert web.library.catalog.frame_count(record.id) >= 3

    file = web.index_link(direct, sampling=FAST)
    assert file.name == "box" and file.url == direct  # a file's link: its file name
    rows = _media(web.settings.home)
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [
        ("A box on a table", page, "ok", "web"),
        ("box", direct, "ok", "web"),
    ]
    assert all(r[4] == pytest.approx(15.18, abs=0.1) for r in rows)

    hits = server.count()
    steps: list = []
    again = web.index_link(page, sampling=FAST, job=Job(steps.append))
    assert again.id == record.id and again.name == record.name
    assert web.index_link(direct).id == file.id  # whatever the sampling asked for
    assert server.count() == hits, "a link already in the collection went to the network"
    assert any("already in the library" in s.message for s in steps)
    assert len(_media(web.settings.home)) == 2

    # sampled again with other settings (as the captions page does): still its link and title
    report = web.index([record.path], "web", sampling=Sampling(every=3.0, dedup=1.0))
    assert report.updated == 1
    (resampled,) = web.library.catalog.media(collection="web", url=page)
    assert resampled.name == "A box on a table" and resampled.path == record.path
    assert web.index_link(page).id == resampled.id and server.count() == hits

    # in another collection it is indexed again, from the download kept (not fetched again)
    other = web.index_link(page, "clips", sampling=FAST)
    assert other.id != record.id and other.url == page and other.collection == "clips"
    assert other.path == record.path and server.count() == hits


def test_a_download_progress_goes_through_the_job_and_stop_keeps_nothing(web, server):
    steps: list = []
    web.index_link(server.url("/short.mp4"), sampling=FAST, job=Job(steps.append))
    assert {s.stage for s in steps} >= {"download", "index"}
    job = Job()
    job.stop()
    with pytest.raises(MediaError, match="stopped"):
        web.index_link(server.url("/box.mp4"), job=job)
    hits = server.count()
    report = web.index_links([server.url("/three.html")], job=job)
    assert report.interrupted and report.added == 0 and server.count() == hits
    assert [r[1] for r in _media(web.settings.home)] == [server.url("/short.mp4")]


def test_a_playlist_page_indexes_each_video_and_reports_the_broken_one(web, server):
    page = server.url("/three.html")
    before = server.count("/box.mp4", "/short.mp4")
    assert [t for _, t in list_link_items(page, web.settings, 25)] == [
        "Three clips (1)",
        "Three clips (2)",
        "Three clips (3)",
    ]
    assert server.count("/box.mp4", "/short.mp4") == before, "listing downloaded a video"

    lines: list[str] = []
    report = web.index_links([page], sampling=FAST, job=Job(lambda s: lines.append(s.message)))
    assert report.added == 2 and report.frames >= 3
    assert len(report.failed) == 1
    failed = report.failed[0]
    assert "Three clips (3)" in failed.path and server.url("/missing.mp4") in failed.path
    assert "404" in failed.reason
    for number in (1, 2):
        assert any(
            line.startswith(f"{number}/3 Three clips ({number}): downloading…") for line in lines
        )
        assert f"{number}/3 Three clips ({number}): done" in lines
    assert any(line.startswith("3/3 Three clips (3): failed: ") and "404" in line for line in lines)
    rows = _media(web.settings.home)
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("Three clips (1)", server.url("/box.mp4"), "ok"),
        ("Three clips (2)", server.url("/short.mp4"), "ok"),
    ]

    hits = server.count("/box.mp4", "/short.mp4")
    again = web.index_links([page], sampling=FAST)
    assert again.unchanged == 2 and again.added == 0 and len(again.failed) == 1
    assert server.count("/box.mp4", "/short.mp4") == hits, "an indexed item was fetched again"


def test_a_playlist_gives_at_most_max_items(tmp_path, embedder, server):
    settings = _settings(tmp_path / "home", max_items=2)
    assert settings.fetch.max_items == 2
    page = server.url("/many.html")
    assert list_link_items(page, settings, 3) == [
        (server.url(f"/clip{i}.mp4"), f"Many clips ({i})") for i in (1, 2, 3)
    ]
    library = Library(settings.home)
    try:
        report = Indexer(library, embedder, settings).index_links([page], "many", sampling=FAST)
    finally:
        library.close()
    assert report.added == 2 and not report.failed
    assert [r[0] for r in _media(settings.home)] == ["Many clips (1)", "Many clips (2)"]
    assert server.count("/clip3.mp4", "/clip4.mp4") == 0


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("http://10.1.2.3/video.mp4", "private-network address"),
        ("http://169.254.169.254/latest/meta-data", "link-local address"),
        ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "data: links cannot be fetched"),
        ("ftp://example.com/video.mp4", "ftp: links cannot be fetched"),
    ],
)
def test_a_refused_link_is_a_clear_error_and_writes_nothing(web, link, reason):
    with pytest.raises(MediaError, match=reason) as single:
        web.index_link(link)
    assert single.value.path == link
    with pytest.raises(MediaError, match=reason):
        web.index_links([link])
    assert _media(web.settings.home) == []
    downloads = web.settings.home / "downloads"
    assert not downloads.exists() or [p.name for p in downloads.iterdir()] == []


def test_a_v1_library_upgrades_on_open_and_keeps_its_rows(tmp_path, web, server):
    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "library.db")
    for statement in _split_sql(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO collections(id, name, created) VALUES (1, 'trip', 0)")
    conn.execute(
        "INSERT INTO media(collection_id, path, name, kind, status, duration, added) "
        "VALUES (1, '/videos/old.mp4', 'old.mp4', 'video', 'ok', 12.5, 1)"
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()

    library = Library(home)
    try:
        assert SCHEMA_VERSION >= 2
        assert db_query(home / "library.db", "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        columns = [r[1] for r in db_query(home / "library.db", "PRAGMA table_info(media)")]
        assert "url" in columns
        (old,) = library.catalog.media()
        assert (old.name, old.collection, old.duration, old.url) == ("old.mp4", "trip", 12.5, None)
        settings = _settings(home)
        record = Indexer(library, web.embedder, settings).index_link(
            server.url("/short.mp4"), sampling=FAST
        )
        assert record.url == server.url("/short.mp4")
        assert [m.name for m in library.catalog.media()] == ["short", "old.mp4"]
    finally:
        library.close()
    Library(home).close()  # opening it again: already up to date, nothing to do
    assert db_query(home / "library.db", "PRAGMA user_version") == [(SCHEMA_VERSION,)]


# -- the command line ---------------------------------------------------------------------------


def test_the_command_line_takes_links(tmp_path, server):
    home = tmp_path / "home"
    loopback = {"FRAMESCOPE_FETCH_ALLOW_LOOPBACK": "1"}
    page = server.url("/one.html")
    first = run_cli(
        ["index", page, "--collection", "web", "--every", "5", "--json"], home, **loopback
    )
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["added"] == 1 and report["frames"] >= 3 and report["failed"] == []
    assert "1/1 A box on a table" in first.stderr
    hits = server.count()
    again = run_cli(["index", page, "--collection", "web", "--every", "5"], home, **loopback)
    assert again.returncode == 0, again.stderr
    assert "1 unchanged" in again.stdout and server.count() == hits

    caption = run_cli(["caption", page, "--every", "5", "--json"], home, **loopback)
    assert caption.returncode == 0, caption.stderr
    captions = json.loads(caption.stdout)
    assert captions["frames"] and Path(captions["folder"]).is_dir()
    assert server.count() == hits  # the download was kept and used again

    ask = run_cli(
        ["ask", page, "-q", "What is on the table?", "--frames", "2", "--json"], home, **loopback
    )
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["question"] == "What is on the table?" and len(answer["frames"]) == 2
    assert server.count() == hits

    status = json.loads(run_cli(["status", "--json"], home).stdout)
    assert {c["name"] for c in status["collections"]} == {"web", "videos"}
    rows = _media(home)
    assert {(r[0], r[1], r[5]) for r in rows} == {
        ("A box on a table", page, "web"),
        ("A box on a table", page, "videos"),
    }

    refused = run_cli(["index", "http://10.1.2.3/video.mp4"], home, **loopback)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "framescope: error: http://10.1.2.3/video.mp4: " in refused.stderr
    assert "private-network address" in refused.stderr
    assert len(_media(home)) == 2
