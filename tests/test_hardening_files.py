"""Hardening of indexing against what a folder or the data directory can hold besides photos:
named pipes, sockets and devices (never opened: opening a pipe blocks), sub-folders that cannot be
read (listed as failed, their files kept), a partly damaged database (a clear message, never a
traceback), and two indexing runs of one collection at once (the second waits for the first)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    cli_env,
    copy_images,
    damage_embeddings,
    db_query,
    framescope_exe,
    run_cli,
    small_images,
    tiny_settings,
)

from core.errors import LibraryError, MediaError
from core.indexing import Indexer, scan_folder
from core.jobs import Job
from core.library import Library
from core.media import file_sha256

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")

HANG = 60  # seconds: far more than any of these runs needs; a hang fails instead of blocking


def _unblock(fifo: Path) -> None:
    """Let a reader stuck opening `fifo` go on (open it for writing, then close it)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _index_in_thread(indexer: Indexer, paths, collection: str, fifos: list[Path]):
    """indexer.index(paths) with a deadline: a run that hangs on a pipe fails the test."""
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = indexer.index(paths, collection)
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    hung = thread.is_alive()
    for _ in range(200):  # old code opens the pipe again after hashing it: free it each time
        if not thread.is_alive():
            break
        for fifo in fifos:
            _unblock(fifo)
        time.sleep(0.05)
    assert not hung, f"indexing hung for {HANG} s on a named pipe"
    if "error" in result:
        raise result["error"]
    return result["report"]


@pytest.fixture
def special_folder(tmp_path, shared_images, monkeypatch):
    """Real photos beside a named pipe and a Unix socket named like photos."""
    folder = tmp_path / "photos"
    good = copy_images(small_images(shared_images, 3), folder)
    fifo = folder / "pipe.jpg"
    os.mkfifo(fifo)
    monkeypatch.chdir(folder)  # a socket's path is limited to about 100 characters: bind it here
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("socket.png")
    monkeypatch.chdir(tmp_path)
    yield folder, good, fifo, folder / "socket.png"
    sock.close()


# -- 1. named pipes, sockets and devices -----------------------------------------------------


def test_pipes_and_sockets_in_a_folder_are_failed_without_being_opened(
    tmp_path, embedder, special_folder
):
    folder, good, fifo, sock = special_folder
    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    indexer = Indexer(library, embedder, settings)

    report = _index_in_thread(indexer, [folder], "special", [fifo])
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert failed == {
        "pipe.jpg": "not a regular file: a named pipe",
        "socket.png": "not a regular file: a socket",
    }
    assert report.added == len(good)
    stored = dict(
        db_query(library.db_path, "SELECT path, error FROM media WHERE status = 'failed'")
    )
    assert stored == {str(fifo): failed["pipe.jpg"], str(sock): failed["socket.png"]}
    assert {r.path for r in library.catalog.media(status="ok")} == {str(p) for p in good}

    # Again: the photos are unchanged, and the pipe still does not block the run.
    again = _index_in_thread(indexer, [folder], "special", [fifo])
    assert again.unchanged == len(good)
    assert again.added == again.removed == 0
    assert {Path(f.path).name: f.reason for f in again.failed} == failed


def test_a_pipe_given_directly_is_failed(tmp_path, library, indexer):
    fifo = tmp_path / "direct.mp4"
    os.mkfifo(fifo)
    report = _index_in_thread(indexer, [fifo], "direct", [fifo])
    assert [(f.path, f.reason) for f in report.failed] == [
        (str(fifo), "not a regular file: a named pipe")
    ]
    assert library.catalog.failed_files()[0].kind == "video"


def test_cli_index_of_a_pipe_and_a_device_ends_and_names_them(tmp_path):
    fifo = tmp_path / "fifo.jpg"  # given directly
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    zero = folder / "zero.jpg"  # met in a folder: a link to an endless character device
    zero.symlink_to("/dev/zero")
    try:
        result = run_cli(["index", fifo, folder], tmp_path / "home", timeout=HANG)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`framescope index` of a named pipe and /dev/zero ran for {HANG} s")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"failed: {fifo}: not a regular file: a named pipe" in result.stdout
    assert f"failed: {zero}: not a regular file: a character device" in result.stdout
    status = json.loads(run_cli(["status", "--json"], tmp_path / "home").stdout)
    assert {f["path"]: f["reason"] for f in status["failed"]} == {
        str(fifo): "not a regular file: a named pipe",
        str(zero): "not a regular file: a character device",
    }


def test_hashing_refuses_a_pipe_instead_of_waiting(tmp_path):
    from core.media.files import not_regular_reason

    fifo = tmp_path / "late.jpg"
    os.mkfifo(fifo)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["sha"] = file_sha256(fifo)
        except MediaError as exc:
            outcome["reason"] = exc.reason

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    hung = thread.is_alive()
    while thread.is_alive():
        _unblock(fifo)
        thread.join(0.05)
    assert not hung, "file_sha256 blocked on a named pipe"
    assert outcome == {"reason": "not a regular file: a named pipe"}
    assert not_regular_reason(os.stat("/dev/null").st_mode) == (
        "not a regular file: a character device"
    )
    assert not_regular_reason(os.stat(tmp_path).st_mode) == "not a regular file: a folder"
    assert not_regular_reason(os.stat(__file__).st_mode) is None


# -- 2. sub-folders that cannot be read ------------------------------------------------------


@pytest.fixture
def nested(tmp_path, shared_images):
    folder = tmp_path / "photos"
    picked = small_images(shared_images, 4)
    top = copy_images(picked[:2], folder)
    private = copy_images(picked[2:], folder / "private")
    return folder, top, private


def _deny(monkeypatch, denied: Path) -> None:
    """os.walk meets `denied` as a folder it may not list (what chmod 000 does for non-root)."""
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)) == denied:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_sub_folder_is_listed_as_failed_and_its_files_kept(
    monkeypatch, nested, library, indexer
):
    folder, top, private = nested
    first = indexer.index([folder], "trip")
    assert first.added == len(top) + len(private) and first.failed == []

    _deny(monkeypatch, folder / "private")
    report = indexer.index([folder], "trip")
    assert [(f.path, f.reason) for f in report.failed] == [
        (str(folder / "private"), "cannot read the folder: permission denied")
    ]
    # Its files could not be seen, which does not mean they are gone: they stay searchable.
    assert report.removed == 0
    assert report.unchanged == len(top)
    assert {r.path for r in library.catalog.media(status="ok")} == {str(p) for p in top + private}

    monkeypatch.undo()
    assert indexer.index([folder], "trip").failed == []


def test_unreadable_sub_folder_on_a_first_run(monkeypatch, nested, library, indexer):
    folder, top, _ = nested
    _deny(monkeypatch, folder / "private")
    report = indexer.index([folder], "trip")
    assert report.added == len(top)
    assert [Path(f.path).name for f in report.failed] == ["private"]
    assert "permission denied" in report.failed[0].reason


def test_scan_folder_reports_what_it_cannot_read(monkeypatch, nested):
    folder, top, _ = nested
    _deny(monkeypatch, folder / "private")
    errors: list[tuple[Path, str]] = []
    assert list(scan_folder(folder, lambda p, why: errors.append((p, why)))) == top
    assert errors == [(folder / "private", "cannot read the folder: permission denied")]
    assert list(scan_folder(folder)) == top  # the other callers (classify) pass it over


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading",
)
def test_unreadable_sub_folder_for_real(nested, indexer):
    folder, _, _ = nested
    (folder / "private").chmod(0)
    try:
        report = indexer.index([folder], "trip")
    finally:
        (folder / "private").chmod(0o755)
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("private", "cannot read the folder: permission denied")
    ]


# -- 3. a partly damaged database ------------------------------------------------------------


@pytest.fixture
def damaged_home(tmp_path, embedder, shared_images):
    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    folder = tmp_path / "photos"
    copy_images(small_images(shared_images, 6), folder)
    assert Indexer(library, embedder, settings).index([folder], "trip").added == 6
    library.close()
    assert damage_embeddings(library.db_path) >= 1
    return settings.home, folder


def _clear_error(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "framescope: error:" in result.stderr
    message = result.stderr
    assert "library.db is damaged" in message
    assert "PRAGMA integrity_check" in message
    assert "index your folders again" in message
    return message


def test_damaged_database_gives_a_clear_error_in_every_command(damaged_home):
    home, folder = damaged_home
    for args in (["search", "a photo"], ["index", folder, "--collection", "trip"]):
        _clear_error(run_cli(args, home))


def test_status_reports_the_integrity_check(damaged_home):
    home, _ = damaged_home
    result = run_cli(["status"], home)
    _clear_error(result)
    assert "Database check: FAILED" in result.stdout
    assert "Data directory:" in result.stdout  # what could be read is still shown

    result = run_cli(["status", "--json"], home)
    _clear_error(result)
    data = json.loads(result.stdout)
    assert data["integrity"]["ok"] is False
    assert data["integrity"]["problems"]
    assert "is damaged" in data["error"]


def test_status_of_a_sound_database_says_so(tmp_path):
    home = tmp_path / "home"
    data = json.loads(run_cli(["status", "--json"], home).stdout)
    assert data["integrity"] == {"check": "quick_check", "ok": True, "problems": []}
    assert "error" not in data
    assert "Database check: ok" in run_cli(["status"], home).stdout


def test_any_sqlite_error_in_the_library_is_a_library_error(damaged_home):
    home, _ = damaged_home
    library = Library(home)
    try:
        with pytest.raises(LibraryError, match="is damaged") as caught:
            library.catalog.model_keys()
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
        assert library.db.check()  # the quick check names the damage
        with pytest.raises(LibraryError, match="is damaged"), library.db.transaction() as conn:
            conn.execute("DELETE FROM embeddings")
        # The failed transaction was rolled back: the connection is usable again.
        assert library.catalog.collections()[0].name == "trip"
    finally:
        library.close()


# -- 4. two indexing runs of one collection at once -----------------------------------------


def test_two_runs_of_one_collection_take_turns(tmp_path, shared_images):
    folder = tmp_path / "photos"
    photos = copy_images(small_images(shared_images, 8), folder)
    # Copies make the second run reuse vectors of rows the first one writes: the race that
    # used to end a run with "the embedding to copy (media N) is gone".
    copies = copy_images(photos, folder / "copies")
    every = {str(p) for p in photos + copies}
    home = tmp_path / "home"
    library = Library(home)
    # Both runs start while the collection is busy, so that they meet: once it is free, one of
    # them indexes and the other waits for it.
    gate = library.collection_lock("trip")
    assert gate.acquire()
    logs = [tmp_path / f"run{i}.err" for i in range(2)]
    procs = []
    try:
        for log in logs:
            with open(log, "w") as err:
                procs.append(
                    subprocess.Popen(
                        [framescope_exe(), "index", folder, "--collection", "trip"],
                        env=cli_env(home, FRAMESCOPE_BATCH_SIZE="2"),
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        cwd=tmp_path,
                    )
                )
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if all("waiting for another indexing run" in log.read_text() for log in logs):
                break
            time.sleep(0.1)
    finally:
        gate.release()
    outputs = []
    for proc, log in zip(procs, logs, strict=True):
        try:
            out, _ = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("an indexing run did not end")
        outputs.append((proc.returncode, out, log.read_text()))
    for code, _, err in outputs:
        assert code == 0, err
        assert "Traceback" not in err
    assert any(
        "waiting for another indexing run of collection 'trip' to finish" in err
        for _, _, err in outputs
    )
    # Every image once, each with one vector; nothing failed.
    rows = db_query(
        home / "library.db",
        "SELECT m.path, m.status, COUNT(e.id) FROM media m "
        "LEFT JOIN embeddings e ON e.media_id = m.id GROUP BY m.id",
    )
    assert sorted(p for p, _, _ in rows) == sorted(every)
    assert {(s, n) for _, s, n in rows} == {("ok", 1)}
    # One of the runs did the work; the other, which waited for it, found it done.
    summaries = [out.splitlines()[0] for _, out, _ in outputs]
    assert sum("16 unchanged" in s for s in summaries) == 1, summaries
    library.close()


def test_a_waiting_run_can_be_stopped(tmp_path, library, indexer, shared_images):
    folder = tmp_path / "photos"
    copy_images(small_images(shared_images, 2), folder)
    gate = library.collection_lock("busy")
    assert gate.acquire()
    steps = []
    job = Job(steps.append, should_stop=lambda: len(steps) >= 1)
    try:
        report = indexer.index([folder], "busy", job=job)
    finally:
        gate.release()
    assert report.interrupted and report.added == 0
    assert [s.message for s in steps] == [
        "waiting for another indexing run of collection 'busy' to finish…"
    ]
    assert indexer.index([folder], "busy").added == 2  # free again once the holder let go


@pytest.mark.parametrize("other_run", ["replaced", "removed"])
def test_a_copy_whose_source_went_away_is_still_indexed(
    tmp_path, library, indexer, shared_images, other_run
):
    """A file planned as a copy of another row, which another run replaced (or removed) since,
    copies the vector of any row of that content, or else is embedded itself."""
    folder = tmp_path / "photos"
    photo = copy_images(small_images(shared_images, 1), folder)[0]
    indexer.index([folder], "trip")
    (source_id,) = [r.id for r in library.catalog.media()]
    copy = folder / "copy.jpg"
    copy.write_bytes(photo.read_bytes())
    real = library.ingest.embedded_copy

    def planned_then_replaced(sha256, model_key):
        found = real(sha256, model_key)
        assert found == source_id
        if other_run == "removed":
            library.ingest.remove_media([source_id])
            return found
        # Another run rewrites the source's row after this run planned to copy it.
        with library.db.transaction() as conn:
            conn.execute(
                "INSERT INTO media(collection_id, path, name, kind, sha256, size, mtime, width, "
                "height, status, thumb, added) SELECT collection_id, path || '.new', name, kind, "
                "sha256, size, mtime, width, height, status, thumb, added FROM media WHERE id = ?",
                (source_id,),
            )
            new_id = conn.execute("SELECT max(id) FROM media").fetchone()[0]
            conn.execute(
                "UPDATE embeddings SET media_id = ? WHERE media_id = ?", (new_id, source_id)
            )
            conn.execute("DELETE FROM media WHERE id = ?", (source_id,))
        return found

    library.ingest.embedded_copy = planned_then_replaced
    try:
        report = indexer.index([copy], "trip")
    finally:
        del library.ingest.embedded_copy
    assert report.failed == []
    assert (report.reused, report.added) == ((1, 0) if other_run == "replaced" else (0, 1))
    vectors = db_query(library.db_path, "SELECT vector FROM embeddings")
    assert len(vectors) == (2 if other_run == "replaced" else 1)
    assert len(set(vectors)) == 1  # the same content, the same vector


def test_sqlite_errors_that_are_not_damage_say_what_they_are(tmp_path, library):
    from core.library.db import library_error

    def error(kind, text: str, code: int) -> str:
        exc = kind(text)
        exc.sqlite_errorcode = code
        return str(library_error(library.db_path, exc))

    assert "locked by another process" in error(sqlite3.OperationalError, "database is locked", 5)
    assert "is full" in error(sqlite3.OperationalError, "database or disk is full", 13)
    assert "cannot be written" in error(sqlite3.OperationalError, "readonly database", 8)
    assert "is damaged" in error(sqlite3.DatabaseError, "database disk image is malformed", 11)
    # A mistake of the code (a closed connection) stays a ProgrammingError, not "damaged".
    conn = library.db.conn()
    library.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
