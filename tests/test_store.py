"""The library on disk: incremental indexing, renames, copies, models kept apart, the FAISS cache
(saved atomically, rebuilt when lost or corrupt, in step across instances), uploads, collections,
and searching from several threads while indexing."""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    brute_force,
    copy_images,
    db_query,
    embedding_ids_by_path,
    row_counts,
    small_images,
    tiny_settings,
    vectors_by_path,
)
from PIL import Image

import core.library.index
from core.errors import QueryError
from core.indexing import Indexer
from core.library import Library
from core.library.index import VectorIndex
from core.media import load_image
from core.search import query_vector, search


def index_files(home: Path, model_key: str) -> tuple[Path, Path]:
    """The saved FAISS index of a model and its manifest, found by the manifest's model key."""
    for manifest in sorted((home / "indexes").glob("*.json")):
        if json.loads(manifest.read_text())["model_key"] == model_key:
            return manifest.with_suffix(".faiss"), manifest
    raise AssertionError(f"no saved index for {model_key} in {home / 'indexes'}")


def db_embedding_ids(library: Library, model_key: str) -> list[int]:
    return sorted(
        i
        for (i,) in db_query(
            library.db_path, "SELECT id FROM embeddings WHERE model_key = ?", model_key
        )
    )


def assert_search_is_exact(library: Library, embedder, texts=("a photo", "red", "road")):
    """Search through the library's index ranks exactly as brute force over the stored vectors."""
    n = library.catalog.counts(embedder.key)["embeddings"]
    for text in texts:
        q = query_vector(embedder, text)
        found = [i for i, _ in library.vectors.search(embedder.key, q, n)]
        assert found == brute_force(library, embedder.key, q, n)


# -- incremental indexing ------------------------------------------------------------------------


def test_second_run_changes_nothing(photos, library, indexer, embedder, count_embeds):
    first = indexer.index([photos])
    assert first.added == 6
    assert count_embeds() == 6
    ids = embedding_ids_by_path(library.db_path, embedder.key)
    assert len(ids) == 6

    second = indexer.index([photos])
    assert second.unchanged == 6
    assert (second.added, second.updated, second.renamed, second.reused, second.removed) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert count_embeds() == 6  # nothing went through the model again
    assert embedding_ids_by_path(library.db_path, embedder.key) == ids


def test_touched_file_with_same_content_is_not_embedded_again(
    photos, library, indexer, embedder, count_embeds
):
    indexer.index([photos])
    ids = embedding_ids_by_path(library.db_path, embedder.key)
    target = sorted(photos.iterdir())[0]
    later = target.stat().st_mtime + 3600
    os.utime(target, (later, later))

    report = indexer.index([photos])
    assert report.unchanged == 6
    assert report.updated == report.added == 0
    assert count_embeds() == 6
    assert embedding_ids_by_path(library.db_path, embedder.key) == ids
    # the new timestamp is remembered, so the next run does not even hash it
    (mtime,) = db_query(library.db_path, "SELECT mtime FROM media WHERE path = ?", str(target))[0]
    assert mtime == later


def test_modified_file_is_embedded_again(photos, library, indexer, embedder, shared_images):
    indexer.index([photos])
    before_ids = embedding_ids_by_path(library.db_path, embedder.key)
    before_vectors = vectors_by_path(library.db_path, embedder.key)
    target = sorted(photos.iterdir())[0]
    replacement = next(p for p in shared_images if p.name not in {f.name for f in photos.iterdir()})
    shutil.copyfile(replacement, target)

    report = indexer.index([photos])
    assert report.updated == 1
    assert report.unchanged == 5
    after_ids = embedding_ids_by_path(library.db_path, embedder.key)
    old_id, new_id = before_ids[str(target)], after_ids[str(target)]
    assert new_id != old_id
    assert old_id not in db_embedding_ids(library, embedder.key)  # the old vector is gone
    assert {p: i for p, i in after_ids.items() if p != str(target)} == {
        p: i for p, i in before_ids.items() if p != str(target)
    }
    new_vector = vectors_by_path(library.db_path, embedder.key)[str(target)]
    assert not np.allclose(new_vector, before_vectors[str(target)])
    # searching with the new picture finds the file; the old vector is not in the index any more
    hits = search(library, embedder, images=[load_image(replacement).image], k=6).hits
    assert hits[0].path == str(target)
    assert old_id not in {h.embedding_id for h in hits}
    assert old_id not in set(library.vectors.index_for(embedder.key, embedder.dim).ids().tolist())


def test_deleted_file_is_dropped_on_the_next_folder_run(photos, library, indexer, embedder):
    indexer.index([photos])
    victim = sorted(photos.iterdir())[2]
    victim_id = embedding_ids_by_path(library.db_path, embedder.key)[str(victim)]
    victim.unlink()

    report = indexer.index([photos])
    assert report.removed == 1
    assert report.unchanged == 5
    assert str(victim) not in {r.path for r in library.catalog.media()}
    assert victim_id not in db_embedding_ids(library, embedder.key)
    hits = search(library, embedder, "a photo", k=10).hits
    assert len(hits) == 5
    assert str(victim) not in {h.path for h in hits}


def test_file_that_became_unreadable_leaves_the_search(photos, library, indexer, embedder):
    indexer.index([photos])
    victim = sorted(photos.iterdir())[1]
    victim_id = embedding_ids_by_path(library.db_path, embedder.key)[str(victim)]
    victim.write_bytes(victim.read_bytes()[:500])  # cut short, e.g. by a failed copy

    report = indexer.index([photos])
    assert [Path(f.path).name for f in report.failed] == [victim.name]
    assert "truncated or corrupt" in report.failed[0].reason
    assert victim_id not in db_embedding_ids(library, embedder.key)
    assert str(victim) not in {h.path for h in search(library, embedder, "a photo", k=10).hits}
    assert [r.path for r in library.catalog.failed_files()] == [str(victim)]
    assert library.catalog.counts()["images"] == 5


def test_thumbnails_of_removed_files_are_deleted_unless_shared(photos, library, indexer):
    first, second = sorted(photos.iterdir())[:2]
    shutil.copyfile(first, photos / "same-as-first.jpg")
    indexer.index([photos])
    thumbs = {r.path: Path(r.thumbnail) for r in library.catalog.media()}
    assert thumbs[str(first)] == thumbs[str(photos / "same-as-first.jpg")]  # named by content
    first.unlink()
    second.unlink()
    report = indexer.index([photos])
    assert report.removed == 2
    assert thumbs[str(first)].is_file()  # still used by the copy
    assert not thumbs[str(second)].exists()


def test_renamed_and_moved_files_keep_their_embedding(
    photos, library, indexer, embedder, count_embeds
):
    indexer.index([photos])
    ids = embedding_ids_by_path(library.db_path, embedder.key)
    first, second = sorted(photos.iterdir())[:2]
    renamed = photos / "renamed-photo.jpg"
    first.rename(renamed)
    (photos / "sub" / "deeper").mkdir(parents=True)
    moved = photos / "sub" / "deeper" / second.name
    second.rename(moved)

    report = indexer.index([photos])
    assert report.renamed == 2
    assert report.added == report.updated == report.removed == 0
    assert count_embeds() == 6
    after = embedding_ids_by_path(library.db_path, embedder.key)
    assert after[str(renamed)] == ids[str(first)]
    assert after[str(moved)] == ids[str(second)]
    assert str(first) not in after and str(second) not in after
    names = {r.path: r.name for r in library.catalog.media()}
    assert names[str(renamed)] == "renamed-photo.jpg"
    hits = search(library, embedder, images=[load_image(renamed).image], k=1).hits
    assert (hits[0].path, hits[0].name) == (str(renamed), "renamed-photo.jpg")


def test_copy_of_an_embedded_file_reuses_its_vector(
    photos, library, indexer, embedder, count_embeds
):
    indexer.index([photos])
    original = sorted(photos.iterdir())[0]
    duplicate = photos / "copy-of-it.jpg"
    shutil.copyfile(original, duplicate)

    report = indexer.index([photos])
    assert report.reused == 1
    assert report.added == 0
    assert count_embeds() == 6  # the copy never went through the model
    vectors = vectors_by_path(library.db_path, embedder.key)
    np.testing.assert_array_equal(vectors[str(duplicate)], vectors[str(original)])
    ids = embedding_ids_by_path(library.db_path, embedder.key)
    assert ids[str(duplicate)] != ids[str(original)]  # its own row: both are found
    hits = search(library, embedder, like=[ids[str(original)]], k=2).hits
    # One file at two paths: one hit that lists both (then the next file).
    assert set(hits[0].paths) == {str(original), str(duplicate)} and len(hits) == 2


def test_same_folder_in_a_second_collection_reuses_vectors(
    photos, library, indexer, embedder, count_embeds
):
    indexer.index([photos], "first")
    report = indexer.index([photos], "second")
    assert report.reused == 6
    assert count_embeds() == 6
    info = {c.name: c.images for c in library.catalog.collections()}
    assert info == {"first": 6, "second": 6}


# -- models are never mixed ------------------------------------------------------------------------


@pytest.fixture
def other_model(embedder):
    """The same network under another model key: what a different CLIP would be to the library."""
    other = copy.copy(embedder)
    other.key = "open_clip/some-other-model/v9"
    return other


def test_embeddings_of_another_model_are_invisible(photos, library, indexer, embedder, other_model):
    indexer.index([photos])
    with pytest.raises(
        QueryError, match="nothing in the library is indexed with the current model"
    ):
        search(library, other_model, "a photo")
    assert other_model.key in str(_query_error(library, other_model))
    # the saved index of the first model is never loaded for the other one
    faiss_path, _ = index_files(library.home, embedder.key)
    assert VectorIndex.load(faiss_path, other_model.key, other_model.dim) is None
    assert VectorIndex.load(faiss_path, embedder.key, embedder.dim).ntotal == 6


def _query_error(library, embedder) -> QueryError:
    with pytest.raises(QueryError) as info:
        search(library, embedder, "a photo")
    return info.value


def test_index_file_of_another_model_under_this_models_name_is_not_used(
    tmp_path, photos, settings, embedder, other_model, shared_images
):
    library = Library(settings.home)
    Indexer(library, embedder, settings).index([photos], "a")
    # Put model A's saved index where model B's would be: B must not load it.
    faiss_a, manifest_a = index_files(settings.home, embedder.key)
    faiss_b = faiss_a.with_name("open_clip_some-other-model_v9.faiss")
    shutil.copyfile(faiss_a, faiss_b)
    shutil.copyfile(manifest_a, faiss_b.with_suffix(".json"))

    folder_b = tmp_path / "other-photos"
    photos_b = copy_images(small_images(shared_images, 9)[6:], folder_b)
    fresh = Library(settings.home)
    report = Indexer(fresh, other_model, settings).index([folder_b], "b")
    assert report.added == 3
    assert sorted(fresh.vectors.index_for(other_model.key, other_model.dim).ids().tolist()) == (
        db_embedding_ids(fresh, other_model.key)
    )
    b_hits = search(fresh, other_model, "a photo", k=50).hits
    assert {h.path for h in b_hits} == {str(p) for p in photos_b}
    a_hits = search(fresh, embedder, "a photo", k=50).hits
    assert {h.path for h in a_hits} == {str(p) for p in photos.iterdir()}


def test_reindexing_the_same_folder_with_another_model_embeds_it(
    photos, library, indexer, settings, embedder, other_model
):
    """After a model change the search says "index your folders again": doing so must work."""
    indexer.index([photos])
    with pytest.raises(QueryError, match="index your folders again"):
        search(library, other_model, "a photo")
    report = Indexer(library, other_model, settings).index([photos])
    assert report.failed == []
    assert report.added + report.updated == 6
    assert library.catalog.counts(other_model.key)["embeddings"] == 6
    hits = search(library, other_model, "a photo", k=50).hits
    assert {h.path for h in hits} == {str(p) for p in photos.iterdir()}
    again = Indexer(library, other_model, settings).index([photos])
    assert again.unchanged == 6  # and done once: the next run has nothing to do


# -- the FAISS index on disk ----------------------------------------------------------------------


def test_index_is_saved_with_a_manifest(photos, library, indexer, embedder):
    indexer.index([photos])
    faiss_path, manifest_path = index_files(library.home, embedder.key)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["model_key"] == embedder.key
    assert manifest["dim"] == embedder.dim
    assert manifest["count"] == 6
    assert manifest["kind"] == "flat"
    assert sorted(p.name for p in faiss_path.parent.iterdir()) == sorted(
        [faiss_path.name, manifest_path.name]
    )  # no temporary files left behind
    saved = VectorIndex.load(faiss_path, embedder.key, embedder.dim)
    assert sorted(saved.ids().tolist()) == db_embedding_ids(library, embedder.key)


def test_index_save_is_atomic(monkeypatch, photos, library, indexer, embedder, shared_images):
    indexer.index([photos])
    faiss_path, manifest_path = index_files(library.home, embedder.key)
    before = faiss_path.read_bytes(), manifest_path.read_bytes()
    shutil.copyfile(small_images(shared_images, 7)[6], photos / "new.jpg")

    def write_half_then_fail(index, path):
        Path(path).write_bytes(b"FAISS partial write")
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(core.library.index.faiss, "write_index", write_half_then_fail)
    with pytest.raises(RuntimeError, match="No space left"):
        indexer.index([photos])
    assert (faiss_path.read_bytes(), manifest_path.read_bytes()) == before
    monkeypatch.undo()

    old = VectorIndex.load(faiss_path, embedder.key, embedder.dim)
    assert old is not None and old.ntotal == 6  # the previous index, whole
    fresh = Library(library.home)
    assert sorted(fresh.vectors.index_for(embedder.key, embedder.dim).ids().tolist()) == (
        db_embedding_ids(fresh, embedder.key)
    )
    assert len(db_embedding_ids(fresh, embedder.key)) == 7
    assert_search_is_exact(fresh, embedder)


def _delete(faiss_path: Path, manifest_path: Path) -> None:
    faiss_path.unlink()


def _garbage(faiss_path: Path, manifest_path: Path) -> None:
    faiss_path.write_bytes(os.urandom(faiss_path.stat().st_size))


def _truncate(faiss_path: Path, manifest_path: Path) -> None:
    data = faiss_path.read_bytes()
    faiss_path.write_bytes(data[: len(data) // 2])


def _bad_manifest_json(faiss_path: Path, manifest_path: Path) -> None:
    manifest_path.write_text('{"model_key": ')


def _manifest_wrong_count(faiss_path: Path, manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] += 3
    manifest_path.write_text(json.dumps(manifest))


def _manifest_missing(faiss_path: Path, manifest_path: Path) -> None:
    manifest_path.unlink()


def _manifest_wrong_fields(faiss_path: Path, manifest_path: Path) -> None:
    manifest_path.write_text(json.dumps({"model": "x", "size": 1}))


@pytest.mark.parametrize(
    "damage",
    [
        _delete,
        _garbage,
        _truncate,
        _bad_manifest_json,
        _manifest_wrong_count,
        _manifest_missing,
        _manifest_wrong_fields,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_lost_or_corrupt_index_is_rebuilt(photos, library, indexer, embedder, damage):
    indexer.index([photos])
    faiss_path, manifest_path = index_files(library.home, embedder.key)
    q = query_vector(embedder, "a photo")
    expected = library.vectors.search(embedder.key, q, 6)
    library.close()

    damage(faiss_path, manifest_path)
    fresh = Library(library.home)
    found = fresh.vectors.search(embedder.key, q, 6)
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert sorted(fresh.vectors.index_for(embedder.key, embedder.dim).ids().tolist()) == (
        db_embedding_ids(fresh, embedder.key)
    )
    assert_search_is_exact(fresh, embedder)
    result = search(fresh, embedder, "a photo", k=6)
    assert len(result.hits) == 6
    # the next indexing run writes a good index again
    Indexer(fresh, embedder, indexer.settings).index([photos])
    fresh.vectors.save_index(embedder.key, embedder.dim)
    saved = VectorIndex.load(faiss_path, embedder.key, embedder.dim)
    assert saved is not None
    assert sorted(saved.ids().tolist()) == db_embedding_ids(fresh, embedder.key)


def test_stale_saved_index_is_brought_in_step(photos, library, indexer, embedder, shared_images):
    """An older but valid index file (e.g. restored from a backup) is synced with the database."""
    indexer.index([photos])
    faiss_path, manifest_path = index_files(library.home, embedder.key)
    old_faiss, old_manifest = faiss_path.read_bytes(), manifest_path.read_bytes()
    sorted(photos.iterdir())[0].unlink()
    copy_images(small_images(shared_images, 9)[6:], photos)
    report = indexer.index([photos])
    assert (report.removed, report.added) == (1, 3)
    faiss_path.write_bytes(old_faiss)
    manifest_path.write_bytes(old_manifest)

    fresh = Library(library.home)
    ids = fresh.vectors.index_for(embedder.key, embedder.dim).ids()
    assert sorted(ids.tolist()) == db_embedding_ids(fresh, embedder.key)
    assert len(ids) == 8
    assert_search_is_exact(fresh, embedder)


def test_faiss_ids_are_the_embedding_row_ids(photos, library, indexer, embedder):
    indexer.index([photos])
    index = library.vectors.index_for(embedder.key, embedder.dim)
    assert sorted(index.ids().tolist()) == db_embedding_ids(library, embedder.key)
    # and each id maps to its own vector: searching a stored vector finds its id first
    ids, vectors = library.vectors.load(embedder.key)
    for i, v in zip(ids, vectors, strict=True):
        scores, found = index.search(v[None, :], 1)
        assert int(found[0, 0]) == int(i)
        assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_changes_by_another_instance_are_seen(tmp_path, settings, embedder, shared_images):
    """Two Library objects on one data directory stand for two processes (app and CLI)."""
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    photos_a = copy_images(small_images(shared_images, 4), folder_a)
    photos_b = copy_images(small_images(shared_images, 7)[4:], folder_b)
    first = Library(settings.home)
    Indexer(first, embedder, settings).index([folder_a])
    assert len(search(first, embedder, "a photo", k=50).hits) == 4  # index built in memory

    second = Library(settings.home)
    Indexer(second, embedder, settings).index([folder_b])
    for photo in photos_b:
        hits = search(first, embedder, images=[load_image(photo).image], k=1).hits
        assert hits[0].path == str(photo)
    assert len(search(first, embedder, "a photo", k=50).hits) == 7

    photos_a[0].unlink()
    Indexer(second, embedder, settings).index([folder_a])
    hits = search(first, embedder, "a photo", k=50).hits
    assert len(hits) == 6
    assert str(photos_a[0]) not in {h.path for h in hits}
    assert sorted(first.vectors.index_for(embedder.key, embedder.dim).ids().tolist()) == (
        db_embedding_ids(first, embedder.key)
    )


# -- uploads and collections ------------------------------------------------------------------------


def test_uploads_are_kept_in_the_data_directory(library, indexer, embedder, shared_images):
    photo = small_images(shared_images, 1)[0]
    data = photo.read_bytes()
    report = indexer.index_uploads(
        [
            ("Holiday Photo.jpg", data),
            ("../../etc/sneaky.jpg", shared_images[-1].read_bytes()),
            ("broken.jpg", b"this is not a picture" * 10),
        ]
    )
    assert report.collection == "uploads"
    assert report.added == 2
    assert [(f.path, "not a readable image" in f.reason) for f in report.failed] == [
        ("broken.jpg", True)
    ]
    records = {r.name: r for r in library.catalog.media(collection="uploads")}
    assert set(records) == {"Holiday Photo.jpg", "sneaky.jpg", "broken.jpg"}
    uploads_dir = library.uploads_dir.resolve()
    for record in records.values():
        stored = Path(record.path)
        assert stored.resolve().is_relative_to(uploads_dir)
        assert stored.is_file()
    assert Path(records["Holiday Photo.jpg"].path).read_bytes() == data
    hits = search(library, embedder, images=[load_image(photo).image], k=1).hits
    assert hits[0].name == "Holiday Photo.jpg"
    assert hits[0].collection == "uploads"

    again = indexer.index_uploads([("Holiday Photo.jpg", data)])
    assert again.unchanged == 1 and again.added == 0
    assert library.catalog.counts()["images"] == 2


def test_search_within_collections(tmp_path, library, indexer, embedder, shared_images):
    photos_a = copy_images(small_images(shared_images, 5), tmp_path / "a")
    photos_b = copy_images(small_images(shared_images, 8)[5:], tmp_path / "b")
    indexer.index([tmp_path / "a"], "alpha")
    indexer.index([tmp_path / "b"], "beta")

    info = {c.name: (c.images, c.failed) for c in library.catalog.collections()}
    assert info == {"alpha": (5, 0), "beta": (3, 0)}
    alpha = search(library, embedder, "a photo", k=50, collections=["alpha"]).hits
    assert {h.path for h in alpha} == {str(p) for p in photos_a}
    assert {h.collection for h in alpha} == {"alpha"}
    beta = search(library, embedder, images=[load_image(photos_a[0]).image], collections=["beta"])
    assert {h.path for h in beta.hits} == {str(p) for p in photos_b}
    both = search(library, embedder, "a photo", k=50, collections=["alpha", "beta"]).hits
    assert len(both) == 8
    everything = search(library, embedder, "a photo", k=50).hits
    assert [h.embedding_id for h in everything] == [h.embedding_id for h in both]
    # a like-search restricted to another collection does not return the example itself
    example = embedding_ids_by_path(library.db_path, embedder.key)[str(photos_a[0])]
    hits = search(library, embedder, like=[example], k=3, collections=["beta"]).hits
    assert example not in {h.embedding_id for h in hits}
    assert {h.collection for h in hits} == {"beta"}


# -- concurrency ------------------------------------------------------------------------------------


def test_searching_from_threads_while_indexing(tmp_path, embedder, shared_images):
    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    first = copy_images(shared_images[:6], tmp_path / "first")
    rest = copy_images(shared_images[6:], tmp_path / "rest")
    Indexer(library, embedder, settings).index([tmp_path / "first"])
    example = embedding_ids_by_path(library.db_path, embedder.key)[str(first[0])]
    texts = ["a photo", "a red car", "sky +blue -night", "animal", "road at night"]
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def searcher(n: int) -> None:
        rng = np.random.default_rng(n)
        while not stop.is_set():
            try:
                text = texts[int(rng.integers(len(texts)))]
                result = search(library, embedder, text, k=8)
                hits = result.hits
                assert 1 <= len(hits) <= 8
                assert len({h.embedding_id for h in hits}) == len(hits)
                scores = [h.score for h in hits]
                assert scores == sorted(scores, reverse=True)
                q = query_vector(embedder, text)
                ids, vectors = library.vectors.load(embedder.key, [h.embedding_id for h in hits])
                true = dict(zip(ids.tolist(), (vectors @ q).tolist(), strict=True))
                for h in hits:
                    assert h.score == pytest.approx(true[h.embedding_id], abs=1e-5)
                like = search(library, embedder, like=[example], k=3).hits
                assert like[0].embedding_id == example
                searches[0] += 1
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        report = Indexer(library, embedder, settings).index([tmp_path / "rest"])
        deadline = time.monotonic() + 30
        while searches[0] < 6 and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert searches[0] >= 6
    assert report.added == len(rest)
    assert library.catalog.counts(embedder.key)["embeddings"] == len(shared_images)
    assert sorted(library.vectors.index_for(embedder.key, embedder.dim).ids().tolist()) == (
        db_embedding_ids(library, embedder.key)
    )
    for photo in rest[:5]:
        assert search(library, embedder, images=[load_image(photo).image], k=1).hits[0].path == (
            str(photo)
        )
    assert_search_is_exact(library, embedder)


def test_thumbnails_exist_for_every_image(photos, library, indexer):
    indexer.index([photos])
    for record in library.catalog.media():
        assert record.thumbnail is not None
        with Image.open(record.thumbnail) as thumb:
            assert max(thumb.size) <= 256
            assert thumb.format == "JPEG"
    assert row_counts(library.db_path)["media"] == 6
