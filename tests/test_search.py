"""Search: an image finds itself, "more like this", exact ranking, the +/- query algebra and its
maths, clear errors, and the relevance cutoff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import brute_force, embedding_ids_by_path, tiny_settings

from core.errors import QueryError
from core.indexing import Indexer
from core.library import Library
from core.media import load_image
from core.search import (
    CUTOFF_MAX_DROP,
    CUTOFF_MIN_SCOPE,
    ParsedQuery,
    collapse_copies,
    describe_search,
    parse_query,
    query_vector,
    relevance_cutoff,
    search,
)
from core.types import Hit, SearchResult


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embedder, shared_images):
    """Every shared photo indexed once for the module, in its own data directory."""
    home = tmp_path_factory.mktemp("search") / "home"
    settings = tiny_settings(home)
    library = Library(home)
    report = Indexer(library, embedder, settings).index(
        [shared_images[0].parent], collection="photos"
    )
    assert report.added == len(shared_images)
    assert report.failed == []
    yield library
    library.close()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# -- finding things ------------------------------------------------------------------------------


def test_every_image_finds_itself_first(indexed, embedder, shared_images):
    for photo in shared_images:
        result = search(indexed, embedder, images=[load_image(photo).image], k=3)
        assert result.hits[0].path == str(photo), photo.name
        assert result.hits[0].score > 0.99
        assert result.hits[0].score > result.hits[1].score
        assert result.query == "example image"


def test_more_like_this_returns_the_item_first(indexed, embedder, shared_images):
    ids = embedding_ids_by_path(indexed.db_path, embedder.key)
    for photo in shared_images[::5]:
        eid = ids[str(photo)]
        hits = search(indexed, embedder, like=[eid], k=5).hits
        assert hits[0].embedding_id == eid
        assert hits[0].path == str(photo)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert all(h.score < hits[0].score for h in hits[1:])


def test_hits_carry_what_a_user_sees(indexed, embedder, shared_images):
    photo = shared_images[3]
    hit = search(indexed, embedder, images=[load_image(photo).image], k=1).hits[0]
    loaded = load_image(photo)
    assert (hit.name, hit.kind, hit.collection) == (photo.name, "image", "photos")
    assert (hit.width, hit.height) == (loaded.width, loaded.height)
    assert hit.size_bytes == photo.stat().st_size
    assert hit.thumbnail is not None and Path(hit.thumbnail).is_file()
    assert hit.timestamp is None


def test_k_limits_the_hits(indexed, embedder, shared_images):
    for k in (1, 5, 24):
        assert len(search(indexed, embedder, "a photo", k=k).hits) == k
    assert len(search(indexed, embedder, "a photo", k=1000).hits) == len(shared_images)


@pytest.mark.parametrize(
    "text", ["a red car", "dog", "the night sky +stars -city", '"traffic light"']
)
def test_ranking_equals_exact_search(indexed, embedder, shared_images, text):
    n = len(shared_images)
    q = query_vector(embedder, text)
    result = search(indexed, embedder, text, k=n)
    assert [h.embedding_id for h in result.hits] == brute_force(indexed, embedder.key, q, n)
    ids, vectors = indexed.vectors.load(embedder.key)
    scores = dict(zip(ids.tolist(), (vectors @ q).tolist(), strict=True))
    for hit in result.hits:
        assert hit.score == pytest.approx(scores[hit.embedding_id], abs=1e-5)


def test_ranking_equals_exact_search_for_random_queries(indexed, embedder):
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = _unit(rng.standard_normal(embedder.dim)).astype(np.float32)
        found = [i for i, _ in indexed.vectors.search(embedder.key, q, 10)]
        assert found == brute_force(indexed, embedder.key, q, 10)


def test_text_and_image_combined_moves_the_ranking(indexed, embedder, shared_images):
    photo = shared_images[0]
    image = load_image(photo).image
    only_image = search(indexed, embedder, images=[image], k=3)
    mostly_image = search(indexed, embedder, "a red car", images=[image], image_weight=0.9, k=3)
    assert mostly_image.hits[0].path == str(photo)
    only_text = search(indexed, embedder, "a red car", k=26)
    all_text = search(indexed, embedder, "a red car", images=[image], image_weight=0.0, k=26)
    assert [h.embedding_id for h in all_text.hits] == [h.embedding_id for h in only_text.hits]
    assert mostly_image.query == "a red car + example image"  # both, truly
    assert only_image.query == "example image"
    assert (mostly_image.text, mostly_image.examples) == ("a red car", ("example image",))
    named = search(indexed, embedder, "a red car", images=[image], image_names=["mine.jpg"], k=1)
    assert named.query == "a red car + mine.jpg" and named.examples == ("mine.jpg",)


# -- the query algebra ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("red car +rain -night", ParsedQuery("red car", ("rain",), ("night",))),
        ("red car", ParsedQuery("red car")),
        (
            '+"traffic light" -"parked car" street',
            ParsedQuery("street", ("traffic light",), ("parked car",)),
        ),
        ('"a quoted phrase"', ParsedQuery("a quoted phrase")),
        ("a t-shirt with x-ray art", ParsedQuery("a t-shirt with x-ray art")),
        ("blue t-shirt -logo", ParsedQuery("blue t-shirt", (), ("logo",))),
        ("cat + dog", ParsedQuery("cat dog")),
        ("cat - dog", ParsedQuery("cat dog")),
        ("+ -", ParsedQuery("")),
        ("-night -rain", ParsedQuery("", (), ("night", "rain"))),
        ("+sun +sea", ParsedQuery("", ("sun", "sea"))),
        ("  spaced   out  ", ParsedQuery("spaced out")),
        ("", ParsedQuery("")),
        ('-""', ParsedQuery("")),
    ],
)
def test_parse_query(query, expected):
    assert parse_query(query) == expected


def test_parsed_query_empty():
    assert parse_query("").empty
    assert parse_query("+ -").empty
    assert not parse_query("-night").empty


def test_query_vector_text_plus_minus(embedder):
    e = {t: embedder.embed_texts([t])[0] for t in ("red car", "rain", "night", "fog")}
    got = query_vector(embedder, "red car +rain -night -fog")
    positive = _unit(e["red car"] + e["rain"])
    expected = _unit(positive - e["night"] - e["fog"])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(query_vector(embedder, "red car"), _unit(e["red car"]), atol=1e-6)
    np.testing.assert_allclose(query_vector(embedder, "+rain"), _unit(e["rain"]), atol=1e-6)


def test_query_vector_image_weight(embedder, shared_images):
    images = [load_image(p).image for p in shared_images[:2]]
    vectors = embedder.embed_images(images)
    text = query_vector(embedder, "a boat")
    image = _unit(vectors.mean(axis=0))

    np.testing.assert_allclose(query_vector(embedder, "a boat", vectors, 0.0), text, atol=1e-6)
    np.testing.assert_allclose(query_vector(embedder, "a boat", vectors, 1.0), image, atol=1e-6)
    np.testing.assert_allclose(query_vector(embedder, "", vectors), image, atol=1e-6)
    for w in (0.25, 0.5, 0.8):
        np.testing.assert_allclose(
            query_vector(embedder, "a boat", vectors, w),
            _unit((1 - w) * text + w * image),
            atol=1e-6,
        )
    # -terms apply to the mix of text and images
    minus = embedder.embed_texts(["water"])[0]
    np.testing.assert_allclose(
        query_vector(embedder, "a boat -water", vectors, 0.5),
        _unit(0.5 * text + 0.5 * image - minus),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        query_vector(embedder, "-water", vectors),
        _unit(image - minus),
        atol=1e-6,
    )


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_image_weight_out_of_range(embedder, weight):
    with pytest.raises(QueryError, match="between 0 and 1"):
        query_vector(embedder, "a boat", np.ones((1, embedder.dim), np.float32), weight)


def test_query_that_cancels_itself(embedder):
    with pytest.raises(QueryError, match="cancels itself out"):
        query_vector(embedder, "cat -cat")


# -- errors a user can cause ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ("+ -", "empty query"),
        ("-night", "-terms only narrow a search"),
        ("-night -rain", "-terms only narrow a search"),
    ],
)
def test_empty_queries(indexed, embedder, text, message):
    with pytest.raises(QueryError, match=message):
        search(indexed, embedder, text)


def test_empty_library(tmp_path, embedder):
    library = Library(tmp_path / "home")
    with pytest.raises(QueryError, match="library is empty"):
        search(library, embedder, "a cat")


def test_no_collection_selected(indexed, embedder):
    with pytest.raises(QueryError, match="no collection selected"):
        search(indexed, embedder, "a cat", collections=[])


def test_unknown_collection_has_nothing(indexed, embedder):
    with pytest.raises(QueryError, match="nothing indexed in the selected collections"):
        search(indexed, embedder, "a cat", collections=["no-such-collection"])


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one(indexed, embedder, k):
    with pytest.raises(QueryError, match="k must be at least 1"):
        search(indexed, embedder, "a cat", k=k)


def test_like_an_item_that_is_gone(indexed, embedder):
    with pytest.raises(Exception, match="no longer in the library"):
        search(indexed, embedder, like=[10**9])


# -- the relevance cutoff ---------------------------------------------------------------------------


def test_relevance_cutoff_rule():
    few = np.full(CUTOFF_MIN_SCOPE - 1, 0.1)
    assert relevance_cutoff(0.9, few) is None  # too few items to judge
    scope = np.array([0.1] * 9 + [0.9])
    # halfway between the median (0.1) and the best (0.9), since that is well below the best
    assert relevance_cutoff(0.9, scope) == pytest.approx(0.5)
    # a best hit only a little above the median: the cutoff stays CUTOFF_MAX_DROP below it
    scope = np.array([0.26] * 10)
    assert relevance_cutoff(0.30, scope) == pytest.approx(0.30 - CUTOFF_MAX_DROP)
    # nothing stands out from the scope: no cutoff
    assert relevance_cutoff(0.2, np.array([0.2] * 12)) is None
    assert relevance_cutoff(0.1, np.linspace(0.0, 0.5, 11)) is None
    # the median, not the mean, is the typical unrelated score
    scope = np.array([0.0] * 6 + [0.8] * 5)
    assert relevance_cutoff(0.8, scope) == pytest.approx(0.4)


def _hit(eid: int, score: float) -> Hit:
    return Hit(eid, eid, f"/p/{eid}.jpg", f"{eid}.jpg", "image", "c", score, 1, 1, 1, None)


def test_search_result_shown_and_hidden():
    hits = tuple(_hit(i, s) for i, s in enumerate([0.9, 0.7, 0.5, 0.49, 0.1]))
    result = SearchResult(hits=hits, cutoff=0.5, query="q")
    assert [h.score for h in result.shown] == [0.9, 0.7, 0.5]
    assert result.hidden_count == 2
    no_cutoff = SearchResult(hits=hits, cutoff=None, query="q")
    assert no_cutoff.shown == hits
    assert no_cutoff.hidden_count == 0


def test_search_applies_the_cutoff_to_the_scope(indexed, embedder, shared_images):
    photo = shared_images[8]
    result = search(indexed, embedder, images=[load_image(photo).image], k=len(shared_images))
    q = query_vector(embedder, "", embedder.embed_images([load_image(photo).image]))
    scope_scores = indexed.vectors.load(embedder.key)[1] @ q
    expected = relevance_cutoff(result.hits[0].score, scope_scores)
    assert expected is not None
    assert result.cutoff == pytest.approx(expected, abs=1e-5)
    assert all(h.score >= result.cutoff for h in result.shown)
    assert result.hidden_count == sum(h.score < result.cutoff for h in result.hits)
    assert result.shown[0].path == str(photo)
    assert result.hidden_count > 0  # an image query on unrelated photos hides most of them


def test_small_scope_has_no_cutoff(tmp_path, embedder, shared_images):
    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    Indexer(library, embedder, settings).index(shared_images[: CUTOFF_MIN_SCOPE - 1])
    result = search(library, embedder, "a photo")
    assert result.cutoff is None
    assert result.hidden_count == 0
    assert len(result.shown) == CUTOFF_MIN_SCOPE - 1


# -- what a search looked for, and copies of one file ------------------------------------------------


def test_more_like_this_names_the_item(indexed, embedder, shared_images):
    ids = embedding_ids_by_path(indexed.db_path, embedder.key)
    photo = shared_images[2]
    result = search(indexed, embedder, like=[ids[str(photo)]], k=3)
    assert result.query == photo.name and result.examples == (photo.name,)
    assert result.text == ""


def test_describe_search_says_what_was_searched_for():
    assert describe_search("a red car") == "“a red car”"
    assert describe_search("", ["cat.jpg"]) == "the image cat.jpg"
    assert describe_search("a red car", ["cat.jpg"]) == "“a red car” and the image cat.jpg"
    assert describe_search("  ", ["a.jpg", "b.jpg"]) == "the images a.jpg, b.jpg"


def test_collapse_copies_keeps_order_and_lists_paths():
    def hit(eid, path, sha, score, t=None):
        return Hit(
            eid, eid, path, Path(path).name, "image", "c", score, 1, 1, 1, None, t, None, sha
        )

    hits = [
        hit(1, "/a/apple.jpg", "s1", 0.9),
        hit(2, "/up/apple.jpg", "s1", 0.9),
        hit(3, "/a/pear.jpg", "s2", 0.8),
        hit(4, "/a/apple.jpg", "s1", 0.9),  # the same path in another collection
        hit(5, "/v/box.mp4", "s3", 0.7, 1.0),
        hit(6, "/w/box.mp4", "s3", 0.7, 1.0),  # the same moment of a copy of the video
        hit(7, "/v/box.mp4", "s3", 0.6, 2.0),  # another moment
        hit(8, "/x/none.jpg", None, 0.5),
    ]
    out = collapse_copies(hits)
    assert [h.embedding_id for h in out] == [1, 3, 5, 7, 8]
    assert out[0].paths == ("/a/apple.jpg", "/up/apple.jpg")
    assert out[2].paths == ("/v/box.mp4", "/w/box.mp4") and out[3].copies == ()


def test_an_uploaded_copy_of_an_indexed_photo_is_one_hit(tmp_path, embedder, shared_images):
    """The same photo indexed from a folder and uploaded: one hit listing both paths, in the
    grid's data and in both exports; k still counts distinct files."""
    import csv
    import io
    import json

    from core.export import hits_to_csv, hits_to_json

    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    indexer = Indexer(library, embedder, settings)
    photos = shared_images[:12]
    indexer.index(photos, "photos")
    upload = indexer.index_uploads([("again.jpg", photos[0].read_bytes())], "uploads")
    assert upload.added + upload.reused == 1
    result = search(library, embedder, images=[load_image(photos[0]).image], k=5)
    assert len(result.hits) == 5
    assert len({h.sha256 for h in result.hits}) == 5
    first = result.hits[0]
    assert len(first.paths) == 2 and str(photos[0]) in first.paths
    assert any(p.endswith("_again.jpg") for p in first.paths)  # the kept upload
    rows = list(csv.DictReader(io.StringIO(hits_to_csv(result.hits))))
    assert len(rows) == 5 and rows[0]["paths"] == " | ".join(first.paths)
    data = json.loads(hits_to_json(result))
    assert data["hits"][0]["paths"] == list(first.paths) and len(data["hits"]) == 5
    assert data["examples"] == ["example image"]
    everywhere = [path for h in data["hits"] for path in h["paths"]]
    assert everywhere.count(str(photos[0])) == 1 and len(everywhere) == 6


def test_images_only_indexing_leaves_videos_for_frame_search(tmp_path, embedder, shared_images):
    from conftest import MEDIA

    from core.indexing import index_report_lines

    folder = tmp_path / "mixed"
    folder.mkdir()
    for photo in shared_images[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "clip.mp4").write_bytes((MEDIA / "video" / "realshort.mp4").read_bytes())
    settings = tiny_settings(tmp_path / "home")
    library = Library(settings.home)
    indexer = Indexer(library, embedder, settings)
    report = indexer.index([folder], "mixed", images_only=True)
    assert report.added == 3 and report.skipped_videos == 1 and report.frames == 0
    assert "1 video left for Frame search" in index_report_lines(report)[0]
    assert library.catalog.counts()["videos"] == 0
    hits = search(library, embedder, "a photo", k=10).hits
    assert hits and all(h.kind == "image" for h in hits)
    # A video indexed from Frame search stays when the folder is indexed again for images.
    indexer.index([folder / "clip.mp4"], "mixed")
    again = indexer.index([folder], "mixed", images_only=True)
    assert again.removed == 0 and again.skipped_videos == 1
    assert library.catalog.counts()["videos"] == 1
