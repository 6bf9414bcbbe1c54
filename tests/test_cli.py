"""The `framescope` console script, run as a user runs it: a real process, a real data directory,
the tiny profile offline. Errors exit non-zero with a message on stderr and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_images, run_cli, small_images, write_bad_files


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result) -> str:
    """The error message of a failed run: one clear line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "framescope: error:" in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def cli_library(tmp_path_factory, shared_images):
    """A data directory filled by `framescope index` over real photos and some bad files."""
    base = tmp_path_factory.mktemp("cli")
    folder = base / "photos"
    photos = copy_images(small_images(shared_images, 8), folder)
    jpeg = next(p for p in shared_images if p.suffix == ".jpg" and p.stat().st_size > 40_000)
    expected = write_bad_files(folder, jpeg)
    (folder / "readme.txt").write_text("not a photo")
    home = base / "home"
    result = run_cli(["index", folder, "--collection", "trip"], home, FRAMESCOPE_BATCH_SIZE="4")
    return home, folder, photos, expected, result


def test_index_prints_a_summary_with_failures(cli_library):
    _, folder, photos, expected, result = cli_library
    out = ok(result)
    assert f"Collection 'trip': {len(photos)} added" in out
    assert f"{len(expected)} failed" in out
    assert "1 other files ignored" in out
    failure_lines = [
        line.strip() for line in out.splitlines() if line.strip().startswith("failed:")
    ]
    assert len(failure_lines) == len(expected)
    for name, reason in expected.items():
        line = next((x for x in failure_lines if f"{folder / name}:" in x), None)
        assert line is not None, f"{name} missing from {failure_lines}"
        assert reason in line


def test_index_again_as_json(cli_library):
    home, folder, photos, expected, _ = cli_library
    report = json.loads(ok(run_cli(["index", folder, "--collection", "trip", "--json"], home)))
    assert report["collection"] == "trip"
    assert report["added"] == report["updated"] == report["removed"] == 0
    assert report["unchanged"] == len(photos) + len(expected) - 1  # all but the dangling link
    assert report["ignored"] == 1
    assert [Path(f["path"]).name for f in report["failed"]] == ["dangling.jpg"]


def test_search_json(cli_library):
    home, _, photos, _, _ = cli_library
    data = json.loads(
        ok(run_cli(["search", "a photo of a cat", "--json", "-k", "3", "--all"], home))
    )
    assert data["query"] == "a photo of a cat"
    assert len(data["hits"]) == 3
    for hit in data["hits"]:
        assert hit["path"] in {str(p) for p in photos}
        assert isinstance(hit["score"], float)
        assert -1.0 <= hit["score"] <= 1.0
        assert hit["collection"] == "trip"
    scores = [h["score"] for h in data["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert data["hidden"] == 0


def test_search_by_image_puts_it_first(cli_library):
    home, _, photos, _, _ = cli_library
    for photo in (photos[1], photos[5]):
        data = json.loads(ok(run_cli(["search", "--image", photo, "--json", "-k", "5"], home)))
        assert data["hits"][0]["path"] == str(photo)
        assert data["hits"][0]["score"] > 0.99
        assert len(data["hits"]) <= 5
        assert data["hidden"] + len(data["hits"]) == 5


def test_search_text_output(cli_library):
    home, _, photos, _, _ = cli_library
    out = ok(run_cli(["search", "--image", photos[2], "-k", "2", "--all"], home))
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "1"
    assert str(photos[2]) in lines[0]
    assert "trip" in lines[0]


def test_status_json(cli_library):
    home, _, photos, expected, _ = cli_library
    data = json.loads(ok(run_cli(["status", "--json"], home)))
    assert data["profile"] == "tiny"
    assert data["real_weights"] is False
    assert Path(data["home"]) == home.resolve()
    assert data["counts"]["images"] == len(photos)
    assert data["counts"]["failed"] == len(expected)
    assert data["counts"]["collections"] == 1
    [collection] = data["collections"]
    assert (collection["name"], collection["images"], collection["failed"]) == (
        "trip",
        len(photos),
        len(expected),
    )
    assert sum(data["embeddings_by_model"].values()) == len(photos)
    failed = {Path(f["path"]).name: f["reason"] for f in data["failed"]}
    assert set(failed) == set(expected)
    for name, reason in expected.items():
        assert reason in failed[name]


def test_status_text(cli_library):
    home, _, photos, _, _ = cli_library
    out = ok(run_cli(["status"], home))
    assert "Profile: tiny" in out
    assert "RANDOM weights" in out
    assert f"{len(photos)} images" in out
    assert "Failed files:" in out
    assert "bomb.png" in out


# -- errors ----------------------------------------------------------------------------------------


def test_empty_query(cli_library):
    home = cli_library[0]
    assert "empty query" in fails(run_cli(["search", ""], home))


def test_only_minus_terms(cli_library):
    home = cli_library[0]
    assert "-terms only narrow a search" in fails(run_cli(["search", "--", "-night"], home))


def test_missing_folder(tmp_path):
    err = fails(run_cli(["index", tmp_path / "no-such-folder"], tmp_path / "home"))
    assert "no-such-folder" in err
    assert "no such file or folder" in err


def test_empty_library(tmp_path):
    assert "library is empty" in fails(run_cli(["search", "a cat"], tmp_path / "home"))


def test_bad_example_image(cli_library, tmp_path):
    home = cli_library[0]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    err = fails(run_cli(["search", "--image", bad], home))
    assert str(bad) in err
    assert "not a readable image" in err


def test_bad_setting(tmp_path):
    err = fails(run_cli(["status"], tmp_path / "home", FRAMESCOPE_BATCH_SIZE="many"))
    assert "FRAMESCOPE_BATCH_SIZE='many' is not a whole number" in err


def test_default_profile_offline_names_the_ways_out(tmp_path):
    """Real weights cannot be downloaded offline: the message says what to do instead."""
    hf = tmp_path / "hf-cache"  # an empty Hugging Face cache: the weights are not there
    result = run_cli(
        ["--profile", "default", "search", "a cat"],
        tmp_path / "home",
        HF_HOME=str(hf),
        HF_HUB_CACHE=str(hf / "hub"),
        FRAMESCOPE_PROFILE="default",
    )
    err = fails(result)
    assert "Cannot load CLIP ViT-B-32" in err
    assert "connect to the internet once" in err
    assert "local weights" in err
    assert "--profile tiny" in err
    assert "FRAMESCOPE_PROFILE=tiny" in err


def test_missing_local_weights_file(tmp_path):
    err = fails(
        run_cli(
            ["--profile", "default", "search", "a cat"],
            tmp_path / "home",
            FRAMESCOPE_CLIP_PRETRAINED=str(tmp_path / "weights.pt"),
        )
    )
    assert "weights.pt does not exist" in err
    assert "--profile tiny" in err


def test_classify_prints_labels_and_reports_bad_files(tmp_path, shared_images):
    folder = tmp_path / "shots"
    copy_images(small_images(shared_images, 3), folder)
    (folder / "broken.jpg").write_text("not an image")
    result = run_cli(
        ["classify", folder, "--labels", "car, truck, bus, Car", "--json"], tmp_path / "home"
    )
    data = json.loads(ok(result))
    assert data["labels"] == ["car", "truck", "bus"] and data["mode"] == "single-label"
    assert len(data["results"]) == 3
    for row in data["results"]:
        assert abs(sum(row["scores"].values()) - 1.0) < 1e-4 and row["top"] == max(
            row["scores"], key=row["scores"].get
        )
    assert [f["path"].endswith("broken.jpg") for f in data["failed"]] == [True]
    assert "duplicate label 'Car'" in result.stderr
    multi = json.loads(
        ok(
            run_cli(
                ["classify", folder, "--labels", "car", "--multi-label", "--json"],
                tmp_path / "home",
            )
        )
    )
    assert multi["mode"] == "multi-label" and all("present" in r for r in multi["results"])
    one = run_cli(["classify", folder, "--labels", "car"], tmp_path / "home")
    assert one.returncode == 1 and "multi-label" in one.stderr and "Traceback" not in one.stderr
    none = run_cli(["classify", folder, "--labels", " , "], tmp_path / "home")
    assert none.returncode == 1 and "label" in none.stderr
