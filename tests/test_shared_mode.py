"""Shared mode keeps users apart: each user's uploads, videos and what is made of them are theirs;
what the operator indexed is everyone's. Two users, one library, one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from conftest import MEDIA, copy_images, require_media, small_images, tiny_settings
from streamlit.testing.v1 import AppTest

from core.errors import AccessDenied, LibraryError
from core.indexing import Indexer
from core.jobs import JobSlots
from core.library import Library
from core.search import rank_frames, search

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shared(tmp_path, shared_images, embedder):
    """A library with an operator collection and one upload each from alice and bob (a photo and
    a video for alice)."""
    require_media("video")
    folder = copy_images(small_images(shared_images, 4), tmp_path / "operator")[0].parent
    settings = tiny_settings(tmp_path / "home", mode="shared", roots=(folder.resolve(),))
    library = Library(settings.home)
    Indexer(library, embedder, settings).index([folder], "photos")  # the operator, from the CLI
    alice, bob = library.for_user("alice"), library.for_user("bob")
    mine = (MEDIA / "images" / "messi5.jpg").read_bytes()
    box = (MEDIA / "video" / "realshort.mp4").read_bytes()
    Indexer(alice, embedder, settings).index_uploads(
        [("alice-photo.jpg", mine), ("clip.mp4", box)], "uploads"
    )
    Indexer(bob, embedder, settings).index_uploads(
        [("bob-photo.jpg", (MEDIA / "images" / "orange.jpg").read_bytes())], "uploads"
    )
    yield library, alice, bob
    library.close()


def _names(hits):
    return sorted(h.name for h in hits)


def test_each_user_sees_the_operators_collections_and_their_own(shared):
    library, alice, bob = shared
    assert [c.name for c in alice.catalog.collections()] == ["photos", "uploads"]
    assert [c.name for c in bob.catalog.collections()] == ["photos", "uploads"]
    alice_uploads = {m.name for m in alice.catalog.media(collection="uploads")}
    assert alice_uploads == {"alice-photo.jpg", "clip.mp4"}
    assert {m.name for m in bob.catalog.media(collection="uploads")} == {"bob-photo.jpg"}
    assert [v.name for v in alice.catalog.videos()] == ["clip.mp4"]
    assert bob.catalog.videos() == []
    assert alice.catalog.counts()["images"] == 5 and bob.catalog.counts()["images"] == 5
    everyone = library.catalog.counts()
    assert (everyone["images"], everyone["videos"], everyone["collections"]) == (6, 1, 3)


def test_search_never_returns_another_users_files(shared, embedder):
    _, alice, bob = shared
    bob_hits = search(bob, embedder, "a photo", k=100).hits
    assert "alice-photo.jpg" not in _names(bob_hits) and "clip.mp4" not in _names(bob_hits)
    assert "bob-photo.jpg" in _names(bob_hits)
    alice_hits = search(alice, embedder, "a photo", k=100).hits
    assert "bob-photo.jpg" not in _names(alice_hits) and "alice-photo.jpg" in _names(alice_hits)
    assert {h.collection for h in alice_hits} == {"photos", "uploads"}  # her own, shown plainly


def test_another_users_items_cannot_be_reached_by_id(shared, embedder):
    _, alice, bob = shared
    video = alice.catalog.videos()[0]
    photo = next(
        m for m in alice.catalog.media(collection="uploads") if m.name == "alice-photo.jpg"
    )
    photo_embedding = int(alice.vectors.embedding_ids(embedder.key, media_ids=[photo.id])[0])
    with pytest.raises(LibraryError):
        bob.vectors.embedding_of(photo_embedding)
    assert bob.catalog.frames_of(video.id) == []
    assert len(bob.vectors.frame_vectors(video.id, embedder.key)) == 0
    assert bob.vectors.hits([(photo_embedding, 1.0)]) == []
    with pytest.raises(Exception, match="no indexed frames"):
        rank_frames(bob, embedder, "a box", media_ids=[video.id])
    assert alice.catalog.frames_of(video.id)


def test_user_names_from_the_proxy_are_checked(tmp_path):
    library = Library(tmp_path / "home")
    for bad in ("", "../alice", "al/ice", "a" * 65, "~alice", "alice bob"):
        with pytest.raises(AccessDenied):
            library.for_user(bad)
    with pytest.raises(LibraryError, match="cannot start with"):
        library.for_user("alice").catalog.collection_id("~bob/uploads")


def test_uploads_are_kept_per_user(shared):
    _, alice, bob = shared
    assert alice.uploads_dir != bob.uploads_dir
    assert sorted(p.name.split("_", 1)[1] for p in alice.uploads_dir.iterdir()) == [
        "alice-photo.jpg",
        "clip.mp4",
    ]


def test_uploads_stay_within_each_users_quota(shared, embedder, tmp_path):
    library, alice, bob = shared
    settings = tiny_settings(library.home, mode="shared", user_upload_bytes=400_000)
    used = sum(f.stat().st_size for f in alice.uploads_dir.iterdir())
    big = (MEDIA / "images" / "starry_night.jpg").read_bytes()  # 0.3 MB: over what alice has left
    assert used + len(big) > 400_000
    with pytest.raises(AccessDenied, match="FRAMESCOPE_USER_UPLOAD_MB"):
        Indexer(alice, embedder, settings).save_upload("big.jpg", big)
    Indexer(bob, embedder, settings).save_upload("big.jpg", big)  # bob has room of his own
    Indexer(library, embedder, settings).save_upload("big.jpg", big)  # the operator: no quota


def test_a_user_runs_at_most_their_share_of_jobs():
    slots = JobSlots()
    with slots.hold("alice", 1):
        with pytest.raises(AccessDenied, match="FRAMESCOPE_USER_JOBS"), slots.hold("alice", 1):
            pass
        with slots.hold("bob", 1):  # bob is not held up by alice
            assert slots.running("bob") == 1
        with slots.hold(None, 1):  # local mode: no limit
            pass
    with slots.hold("alice", 1):  # released when the job ended
        pass


# -- the app, as two users behind a proxy ---------------------------------------------------------


@pytest.fixture
def shared_app(shared, monkeypatch):
    library, _, _ = shared
    monkeypatch.setenv("FRAMESCOPE_HOME", str(library.home))
    monkeypatch.setenv("FRAMESCOPE_PROFILE", "tiny")
    monkeypatch.setenv("FRAMESCOPE_MODE", "shared")
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def _as(monkeypatch, headers: dict) -> None:
    import ui.resources

    monkeypatch.setattr(ui.resources, "request_headers", lambda: headers)


def _page(script: str) -> AppTest:
    return AppTest.from_file(str(ROOT / script), default_timeout=180).run()


def test_without_the_proxys_header_there_is_no_access(shared_app, monkeypatch):
    _as(monkeypatch, {})
    at = _page("pages/4_Video_QA.py")
    assert not at.exception
    assert any("No access" in e.value for e in at.error)
    assert not at.selectbox  # nothing of the library was shown


def test_video_qa_lists_only_the_users_own_videos(shared_app, monkeypatch):
    _as(monkeypatch, {"X-Forwarded-User": "alice"})
    at = _page("pages/4_Video_QA.py")
    at.button_group(key="qa-source").set_value("Library").run()  # the video picker's Library
    assert not at.exception
    shown = " ".join(str(o) for box in at.selectbox for o in box.options)
    assert "clip.mp4" in shown
    _as(monkeypatch, {"X-Forwarded-User": "bob"})
    at = _page("pages/4_Video_QA.py")
    at.button_group(key="qa-source").set_value("Library").run()
    assert not at.exception
    shown = " ".join(str(o) for box in at.selectbox for o in box.options)
    assert "clip.mp4" not in shown
