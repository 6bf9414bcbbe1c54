"""Safe media loading: bad inputs are refused with a clear reason, good formats all load, and a
folder with bad files indexes everything else while recording each failure (never half-written)."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    BAD_FILES,
    bomb_png,
    copy_images,
    db_query,
    encode,
    ico_bytes,
    ppm_bytes,
    row_counts,
    small_images,
    tiny_settings,
    truncated_jpeg,
    write_bad_files,
)
from PIL import Image

from core.errors import LibraryError, MediaError
from core.indexing import Indexer
from core.library import Library
from core.media import load_image
from core.search import search

# -- load_image: bad input ---------------------------------------------------------------------


def _load_error(source, **kwargs) -> MediaError:
    with pytest.raises(MediaError) as info:
        load_image(source, **kwargs)
    return info.value


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "letter.jpg"
    path.write_text("Dear Sir, this is a letter, not a photo.\n" * 10)
    err = _load_error(path)
    assert err.path == str(path)
    assert "not a readable image" in err.reason
    assert "JPEG, PNG" in err.reason  # says what would have been accepted
    assert str(path) in str(err)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in _load_error(path).reason


@pytest.mark.parametrize("min_side", [None, 256], ids=["full-decode", "draft-decode"])
def test_truncated_jpeg_is_refused_not_half_grey(tmp_path, shared_images, min_side):
    source = next(p for p in shared_images if p.suffix == ".jpg" and p.stat().st_size > 40_000)
    path = tmp_path / "cut.jpg"
    path.write_bytes(truncated_jpeg(source))
    assert "truncated or corrupt" in _load_error(path, min_side=min_side).reason
    # the untruncated file loads fine: the failure is about the truncation
    assert load_image(source, min_side=min_side).width > 0


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    data = bomb_png(20000, 20000)
    assert len(data) < 10_000  # a small file...
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    err = _load_error(path)  # ...that would be 400 megapixels: refused by its header
    assert "20000x20000" in err.reason
    assert "decompression bomb" in err.reason
    assert "over the limit of 100,000,000" in err.reason


def test_pixel_limit_is_configurable(shared_images):
    photo = shared_images[0]
    with Image.open(photo) as im:
        pixels = im.width * im.height
    assert "pixels, over the limit" in _load_error(photo, max_pixels=pixels - 1).reason
    assert load_image(photo, max_pixels=pixels).width > 0


def test_dangling_symlink(tmp_path):
    link = tmp_path / "x.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    assert _load_error(link).reason == "file not found"


def test_directory_named_like_an_image(tmp_path):
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    assert "cannot read the file" in _load_error(folder).reason


def test_missing_file(tmp_path):
    assert _load_error(tmp_path / "never-existed.jpg").reason == "file not found"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading",
)
def test_unreadable_file_permission_denied(tmp_path, shared_images):
    path = tmp_path / "locked.jpg"
    path.write_bytes(shared_images[0].read_bytes())
    path.chmod(0)
    try:
        assert "permission denied" in _load_error(path).reason
    finally:
        path.chmod(0o644)


def test_heic_named_file_is_not_readable(tmp_path):
    path = tmp_path / "phone.heic"
    path.write_bytes(BAD_FILES["phone.heic"][0](path))
    assert "not a readable image" in _load_error(path).reason


@pytest.mark.parametrize(
    ("make", "fmt"), [(ico_bytes, "ICO"), (ppm_bytes, "PPM")], ids=["ico", "ppm"]
)
def test_real_but_unsupported_format_renamed_jpg(tmp_path, make, fmt):
    path = tmp_path / "renamed.jpg"
    path.write_bytes(make())
    with Image.open(path) as im:  # Pillow can read it: the refusal is ours, and says why
        assert im.format == fmt
    reason = _load_error(path).reason
    assert f"unsupported image format {fmt}" in reason
    assert "supported: JPEG, PNG, WebP, BMP, TIFF, GIF" in reason


def test_file_over_max_bytes_is_refused_before_reading(tmp_path, shared_images):
    photo = max(shared_images, key=lambda p: p.stat().st_size)
    size = photo.stat().st_size
    reason = _load_error(photo, max_bytes=size - 1).reason
    assert "the limit is" in reason
    assert load_image(photo, max_bytes=size).width > 0
    big = tmp_path / "big.jpg"
    big.write_bytes(photo.read_bytes() + b"\0" * (3 * 1024 * 1024))
    reason = _load_error(big, max_bytes=2 * 1024 * 1024).reason
    assert "MB; the limit is 2.0 MB" in reason


def test_bytes_upload_is_named_in_errors():
    err = _load_error(b"", name="holiday.jpg")
    assert err.path == "holiday.jpg"
    err = _load_error(b"garbage" * 10, name="holiday.jpg")
    assert str(err).startswith("holiday.jpg: not a readable image")


# -- load_image: good formats --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_rgb(shared_images) -> Image.Image:
    with Image.open(shared_images[0]) as im:
        return im.convert("RGB").resize((120, 90))


@pytest.mark.parametrize(
    ("fmt", "suffix", "label"),
    [
        ("WEBP", ".webp", "WebP"),
        ("BMP", ".bmp", "BMP"),
        ("TIFF", ".tiff", "TIFF"),
        ("PNG", ".png", "PNG"),
        ("JPEG", ".jpg", "JPEG"),
    ],
)
def test_supported_formats_load(tmp_path, sample_rgb, fmt, suffix, label):
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(encode(sample_rgb, fmt))
    loaded = load_image(path)
    assert loaded.format == label
    assert (loaded.width, loaded.height) == (120, 90)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (120, 90)
    # the pixels are the picture, not a blank: close to the original (lossy formats allowed)
    diff = np.abs(np.asarray(loaded.image, np.int16) - np.asarray(sample_rgb, np.int16))
    assert diff.mean() < 12


def test_png_with_alpha_is_flattened_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((0, 160, 0, 255), (20, 0, 40, 20))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    loaded = load_image(path)
    assert loaded.format == "PNG"
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((5, 10)) == (255, 255, 255)  # transparent -> white, not black
    assert loaded.image.getpixel((30, 10)) == (0, 160, 0)


def test_animated_gif_gives_its_first_frame(tmp_path):
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    blue = Image.new("RGB", (32, 32), (0, 0, 255))
    green = Image.new("RGB", (32, 32), (0, 255, 0))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue, green], duration=100, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
    loaded = load_image(path)
    assert loaded.format == "GIF"
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((16, 16)) == (255, 0, 0)


@pytest.mark.parametrize(("orientation", "swapped"), [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation(tmp_path, orientation, swapped):
    image = Image.new("RGB", (60, 30), (10, 20, 200))
    image.paste((250, 250, 0), (0, 0, 10, 30))  # a yellow band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    image.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    expected = (30, 60) if swapped else (60, 30)
    assert (loaded.width, loaded.height) == expected
    assert loaded.image.size == expected  # the pixels are turned upright too


def test_jpeg_draft_decode_keeps_full_dimensions(shared_images):
    photo = max((p for p in shared_images if p.suffix == ".jpg"), key=lambda p: p.stat().st_size)
    full = load_image(photo)
    draft = load_image(photo, min_side=64)
    assert (draft.width, draft.height) == (full.width, full.height)
    assert min(draft.image.size) >= 64


def test_a_large_png_is_reduced_but_keeps_its_dimensions_and_content(tmp_path):
    """Formats without reduced-scale decoding are shrunk after decoding: a folder of large
    screenshots must not hold full-size copies in memory while they wait for the model."""
    big = Image.new("RGB", (1800, 1200), (0, 0, 255))
    big.paste((255, 0, 0), (0, 0, 900, 1200))  # left half red, right half blue
    path = tmp_path / "big.png"
    big.save(path)
    loaded = load_image(path, min_side=256)
    assert (loaded.width, loaded.height) == (1800, 1200)
    assert 256 <= min(loaded.image.size) < 512
    w, h = loaded.image.size
    assert w / h == pytest.approx(1.5, rel=0.02)
    assert loaded.image.getpixel((w // 4, h // 2)) == (255, 0, 0)
    assert loaded.image.getpixel((3 * w // 4, h // 2)) == (0, 0, 255)
    assert load_image(path).image.size == (1800, 1200)  # without min_side: full size


# -- the indexer on a folder with bad files ---------------------------------------------------------


def _noise_png(width: int, height: int) -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG", compress_level=0)


@pytest.fixture
def mixed_folder(tmp_path, shared_images, sample_rgb):
    """Real photos, the other good formats, and every kind of bad file, in one folder."""
    folder = tmp_path / "mixed"
    good = copy_images(small_images(shared_images, 4), folder)
    for fmt, suffix in (("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif")):
        path = folder / f"sample{suffix}"
        path.write_bytes(encode(sample_rgb.rotate(len(good) * 7), fmt))
        good.append(path)
    gif = folder / "anim.gif"
    sample_rgb.save(gif, save_all=True, append_images=[sample_rgb.rotate(90)], duration=50)
    good.append(gif)
    rgba = sample_rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    good.append(folder / "alpha.png")
    # A directory with an image name is a folder: walked, never a failure.
    album = folder / "album.jpg"
    good += copy_images([small_images(shared_images, 5)[4]], album)

    jpeg = next(p for p in shared_images if p.suffix == ".jpg" and p.stat().st_size > 40_000)
    expected = write_bad_files(folder, jpeg)
    (folder / "huge.png").write_bytes(_noise_png(600, 600))  # ~1 MB, over the 800 kB limit below
    expected["huge.png"] = "the limit is"
    return folder, good, expected


def test_bad_files_are_recorded_and_the_rest_indexed(tmp_path, embedder, mixed_folder):
    folder, good, expected = mixed_folder
    settings = tiny_settings(tmp_path / "home", max_image_bytes=800_000)
    library = Library(settings.home)
    report = Indexer(library, embedder, settings).index([folder], "mixed")

    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failed) == set(expected), report.failed
    for name, reason in expected.items():
        assert reason in failed[name], (name, failed[name])
    assert report.added == len(good)
    assert not report.interrupted

    # The library says the same as the report, and keeps the reasons.
    stored_failures = {Path(r.path).name: r.error for r in library.catalog.failed_files("mixed")}
    assert stored_failures == failed
    ok = db_query(settings.home / "library.db", "SELECT path FROM media WHERE status = 'ok'")
    assert {p for (p,) in ok} == {str(p) for p in good}
    counts = library.catalog.counts(embedder.key)
    assert counts == {
        "collections": 1,
        "images": len(good),
        "videos": 0,
        "failed": len(expected),
        "embeddings": len(good),
    }
    # Failed files have no embedding; every good file has exactly one and is findable.
    rows = db_query(
        settings.home / "library.db",
        "SELECT m.status, COUNT(e.id) FROM media m LEFT JOIN embeddings e ON e.media_id = m.id "
        "GROUP BY m.id",
    )
    assert all((n == 1) == (status == "ok") for status, n in rows)
    hits = search(library, embedder, "a photo", k=50).hits
    assert {h.path for h in hits} == {str(p) for p in good}

    # A second run does not retry the failures or re-embed anything; only the file that cannot
    # even be looked at (the dangling link) is reported again.
    again = Indexer(library, embedder, settings).index([folder], "mixed")
    assert again.unchanged == len(good) + len(expected) - 1
    assert again.added == again.updated == again.removed == 0
    assert [Path(f.path).name for f in again.failed] == ["dangling.jpg"]
    assert library.catalog.counts(embedder.key)["embeddings"] == len(good)


def test_failed_file_fixed_later_is_indexed(tmp_path, library, indexer, shared_images):
    folder = tmp_path / "photos"
    folder.mkdir()
    broken = folder / "photo.jpg"
    broken.write_bytes(b"not yet")
    report = indexer.index([folder])
    assert [Path(f.path).name for f in report.failed] == ["photo.jpg"]
    broken.write_bytes(shared_images[0].read_bytes())
    report = indexer.index([folder])
    assert report.failed == []
    assert report.added + report.updated == 1
    assert library.catalog.failed_files() == []
    assert library.catalog.counts()["images"] == 1


def test_hidden_and_system_files_skipped_other_files_ignored(
    tmp_path, library, indexer, shared_images
):
    folder = tmp_path / "photos"
    photos = copy_images(small_images(shared_images, 3), folder)
    photo_bytes = photos[0].read_bytes()
    for rel in (
        ".hidden.jpg",
        ".git/objects/pic.jpg",
        ".thumbnails/normal/a.png",
        "__MACOSX/._photo.jpg",
        "__MACOSX/photo.jpg",
        "@eaDir/photo.jpg",
    ):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(photo_bytes)
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 100)
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "notes.txt").write_text("where these were taken\n")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")

    report = indexer.index([folder])
    assert report.added == 3
    assert report.ignored == 3  # notes.txt, report.pdf, sub/data.csv
    assert report.failed == []
    stored = {r.path for r in library.catalog.media()}
    assert stored == {str(p) for p in photos}


def test_a_failing_batch_writes_nothing_of_itself(
    tmp_path, monkeypatch, library, indexer, embedder, shared_images
):
    """A batch is one transaction: if writing it fails half-way, none of its rows remain."""
    folder = tmp_path / "photos"
    copy_images(small_images(shared_images, 10), folder)
    db = library.db_path
    real_add = library.ingest.add_images
    calls = []

    def failing_second_batch(collection_id, model_key, images):
        calls.append(len(images))
        if len(calls) >= 2:  # the second batch, and the indexer's retry of it
            # The batch's own rows are inserted first, then this bogus copy (of a vector no row
            # has) fails the transaction.
            bogus = replace(
                images[0], path="/x/bogus.jpg", vector=None, same_as=10**9, sha256="0" * 64
            )
            images = [*images, bogus]
        return real_add(collection_id, model_key, images)

    monkeypatch.setattr(library.ingest, "add_images", failing_second_batch)
    with pytest.raises(LibraryError, match="embedding to copy"):
        indexer.index([folder])
    first_batch = calls[0]
    assert first_batch == 4  # batch_size of the tiny test settings
    assert row_counts(db) == {"collections": 1, "media": first_batch, "embeddings": first_batch}
    assert db_query(db, "PRAGMA integrity_check") == [("ok",)]
    kept = db_query(db, "SELECT id FROM embeddings ORDER BY id")

    monkeypatch.setattr(library.ingest, "add_images", real_add)
    report = indexer.index([folder])
    assert report.unchanged == first_batch
    assert report.added == 10 - first_batch
    assert row_counts(db) == {"collections": 1, "media": 10, "embeddings": 10}
    # the first batch was kept as written, not embedded again
    assert set(kept) <= set(db_query(db, "SELECT id FROM embeddings"))


def test_index_file_paths_directly(tmp_path, library, indexer, shared_images):
    folder = tmp_path / "photos"
    photos = copy_images(small_images(shared_images, 3), folder)
    bad = folder / "bad.jpg"
    bad.write_bytes(b"junk" * 50)
    report = indexer.index([photos[0], photos[1], bad], "picked")
    assert report.added == 2
    assert [(Path(f.path).name, "not a readable image" in f.reason) for f in report.failed] == [
        ("bad.jpg", True)
    ]
    # indexing single files never removes the folder's other rows
    report = indexer.index([photos[2]], "picked")
    assert report.added == 1 and report.removed == 0
    assert library.catalog.counts()["images"] == 3


def test_missing_path_raises_before_writing(tmp_path, library, indexer):
    with pytest.raises(MediaError, match="no such file or folder"):
        indexer.index([tmp_path / "nowhere"])
    assert row_counts(library.db_path) == {"collections": 0, "media": 0, "embeddings": 0}


def test_bomb_bytes_are_a_valid_png_header():
    with Image.open(io.BytesIO(bomb_png(300, 200))) as im:
        assert (im.format, im.size) == ("PNG", (300, 200))


def test_rotated_photo_is_stored_upright(tmp_path, library, indexer, embedder):
    image = Image.new("RGB", (300, 200), (10, 20, 200))
    image.paste((250, 250, 0), (0, 0, 40, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photos" / "portrait.jpg"
    path.parent.mkdir()
    image.save(path, format="JPEG", exif=exif.tobytes())
    indexer.index([path.parent])
    [record] = library.catalog.media()
    assert (record.width, record.height) == (200, 300)
    with Image.open(record.thumbnail) as thumb:
        assert thumb.height > thumb.width  # the thumbnail is upright too


def test_missing_shared_media_skips_locally_and_fails_on_ci(monkeypatch, tmp_path):
    import conftest

    monkeypatch.setattr(conftest, "MEDIA", tmp_path / "no-shared-media")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared media not found"):
        conftest.require_media("images")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="shared media not found"):
        conftest.require_media("images")
