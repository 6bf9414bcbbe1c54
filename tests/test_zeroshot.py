"""Zero-shot classification: maths against open_clip, prompt ensembles, caching, label parsing,
multi-label scoring, where-in-the-image maps, folders with truths, bad files and video frames.

The tiny random-weight CLIP makes predictions meaningless, so tests check the computations (to
1e-5 against a direct open_clip computation) and the bookkeeping, never what an image shows.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_images, require_media, write_bad_files
from PIL import Image

from core import zeroshot as zs
from core.errors import MediaError, QueryError
from core.export import classification_to_csv
from core.media import FrameSampler, probe_video

TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a drawing of the {}.")


def pil(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def by_name(images: list[Path], *names: str) -> list[Path]:
    found = {p.name: p for p in images}
    return [found[n] for n in names]


@pytest.fixture(autouse=True)
def fresh_label_cache():
    zs.clear_label_cache()
    yield
    zs.clear_label_cache()


# -- the maths -----------------------------------------------------------------------------------


def test_probabilities_equal_a_direct_open_clip_computation(embedder, shared_images):
    images = [pil(p) for p in by_name(shared_images, "apple.jpg", "baboon.jpg", "sudoku.png")]
    labels = ["apple", "monkey", "puzzle", "car"]

    batch = zs.embed_images(embedder, images, batch_size=2)
    result = zs.classify(embedder, batch.vectors, labels, TEMPLATES)

    model = embedder.model
    with torch.no_grad():
        img = model.encode_image(torch.stack([embedder.preprocess(im) for im in images]))
        img = img / img.norm(dim=-1, keepdim=True)
        prompts = [t.format(label) for label in labels for t in TEMPLATES]
        txt = model.encode_text(embedder.tokenizer(prompts))
        txt = txt / txt.norm(dim=-1, keepdim=True)
        txt = txt.reshape(len(labels), len(TEMPLATES), -1).mean(dim=1)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        scale = model.logit_scale.exp()
        expected = (scale * img @ txt.T).softmax(dim=-1).numpy()
        cosine = (img @ txt.T).numpy()

    assert result.probs.shape == (3, 4)
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    np.testing.assert_allclose(result.cosine, cosine, atol=1e-5)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert result.logit_scale == pytest.approx(float(scale))
    assert result.labels == tuple(labels)
    assert result.top_labels == tuple(labels[i] for i in expected.argmax(axis=1))
    assert result.scores is None and result.present is None and result.scoring == "softmax"


def test_ensemble_is_the_renormalized_mean_of_unit_prompt_vectors(embedder):
    labels = ["red bicycle", "old tree"]
    matrix = zs.label_embeddings(embedder, labels, TEMPLATES)

    for row, label in zip(matrix, labels, strict=True):
        units = [embedder.embed_texts([t.format(label)])[0].astype(np.float64) for t in TEMPLATES]
        for u in units:
            assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-5)
        mean = np.sum(units, axis=0) / len(units)
        by_hand = mean / np.sqrt(np.sum(mean * mean))
        np.testing.assert_allclose(row, by_hand, atol=1e-6)
    assert matrix.shape == (2, embedder.dim)
    assert matrix.dtype == np.float32
    # one template: the label vector is that prompt's vector
    single = zs.label_embeddings(embedder, labels, TEMPLATES[:1])
    np.testing.assert_allclose(
        single, embedder.embed_texts([TEMPLATES[0].format(x) for x in labels]), atol=1e-6
    )


def test_label_embeddings_are_computed_once_and_reused(embedder, monkeypatch, shared_images):
    texts_seen: list[int] = []
    encode_calls: list[int] = []
    real_embed_texts = embedder.embed_texts
    real_encode_text = embedder.model.encode_text

    def counting_embed_texts(texts):
        texts_seen.append(len(texts))
        return real_embed_texts(texts)

    def counting_encode_text(tokens, *args, **kwargs):
        encode_calls.append(int(tokens.shape[0]))
        return real_encode_text(tokens, *args, **kwargs)

    monkeypatch.setattr(embedder, "embed_texts", counting_embed_texts)
    monkeypatch.setattr(embedder.model, "encode_text", counting_encode_text)
    labels = ["cache zebra", "cache giraffe", "cache okapi"]  # prompts no other test encodes

    first = zs.label_embeddings(embedder, labels, TEMPLATES)
    assert texts_seen == [9] and encode_calls == [9]  # 3 labels x 3 templates, one pass

    again = zs.label_embeddings(embedder, labels, list(TEMPLATES))
    vectors = zs.embed_images(embedder, [pil(shared_images[0])]).vectors
    for _ in range(3):
        zs.classify(embedder, vectors, labels, TEMPLATES)
    assert again is first
    assert texts_seen == [9] and encode_calls == [9]  # nothing re-encoded, not even looked up
    with pytest.raises(ValueError):
        first[0, 0] = 1.0  # shared by every caller: read-only

    # other templates are another matrix; prompts already seen come from the embedder's cache
    zs.label_embeddings(embedder, labels, TEMPLATES[:2])
    assert texts_seen == [9, 6] and encode_calls == [9]

    # concurrent first requests for a new label set encode it once
    new = ["cache tapir", "cache llama"]
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(zs.label_embeddings(embedder, new, TEMPLATES))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert encode_calls == [9, 6]


# -- labels and templates ------------------------------------------------------------------------


def test_parse_labels_splits_on_commas_and_new_lines():
    labels, warnings = zs.parse_labels(" car, truck\nbus \r\n\n, ,traffic   light,\n")
    assert labels == ["car", "truck", "bus", "traffic light"]
    assert warnings == []


def test_parse_labels_drops_duplicates_with_a_warning():
    labels, warnings = zs.parse_labels("Car, truck, car\nTRUCK, bus")
    assert labels == ["Car", "truck", "bus"]
    assert len(warnings) == 2
    assert "car" in warnings[0] and "Car" in warnings[0] and "duplicate" in warnings[0]
    assert "TRUCK" in warnings[1]


@pytest.mark.parametrize("text", ["", "   ", ",,, \n ,", "\n\n"])
def test_parse_labels_without_labels_is_an_error(text):
    with pytest.raises(QueryError, match="no labels"):
        zs.parse_labels(text)


def test_parse_labels_warns_about_labels_the_tokenizer_truncates(embedder):
    long_label = "a small red car parked " * 16
    labels, warnings = zs.parse_labels(f"dog, {long_label}, cat", embedder, TEMPLATES)
    assert labels == ["dog", " ".join(long_label.split()), "cat"]
    assert len(warnings) == 1
    assert labels[1] in warnings[0] and "too long" in warnings[0]
    assert str(embedder.context_length) in warnings[0]
    # the check agrees with the embedder's own count
    assert max(embedder.token_count(t.format(labels[1])) for t in TEMPLATES) > 77
    assert all(embedder.token_count(t.format("dog")) <= 77 for t in TEMPLATES)


def test_templates_need_a_placeholder(embedder):
    with pytest.raises(QueryError, match=r"\{\}"):
        zs.label_embeddings(embedder, ["cat", "dog"], ["a photo of a cat."])
    with pytest.raises(QueryError, match=r"\{\}"):
        zs.classify(
            embedder, np.zeros((1, embedder.dim), np.float32), ["cat", "dog"], ["a {} and a {}"]
        )
    with pytest.raises(QueryError, match="no prompt templates"):
        zs.validate_templates([])
    with pytest.raises(QueryError):
        zs.validate_templates(["a {label} photo"])
    assert zs.validate_templates("a photo of a {}.") == ("a photo of a {}.",)
    assert zs.parse_templates("a photo of a {}, taken at night.\n\nart of a {}\n") == (
        "a photo of a {}, taken at night.",
        "art of a {}",
    )
    assert all("{}" in t for t in zs.DEFAULT_TEMPLATES) and 8 <= len(zs.DEFAULT_TEMPLATES) <= 10


def test_presets():
    assert {"road scene", "conditions", "general"} <= set(zs.LABEL_PRESETS)
    road = zs.LABEL_PRESETS["road scene"]
    for label in ("car", "truck", "bus", "bicycle", "motorcycle", "pedestrian", "traffic light"):
        assert label in road
    assert zs.LABEL_PRESETS["conditions"] == ("day", "night", "rain", "fog", "snow")
    assert 15 <= len(zs.LABEL_PRESETS["general"]) <= 20
    for labels in zs.LABEL_PRESETS.values():  # every preset is a valid label list
        assert zs.parse_labels(", ".join(labels))[0] == list(labels)


def test_one_label_needs_multi_label_mode(embedder):
    vectors = np.zeros((2, embedder.dim), np.float32)
    vectors[:, 0] = 1.0
    with pytest.raises(QueryError, match="multi-label") as err:
        zs.classify(embedder, vectors, ["car"], TEMPLATES)
    assert "1.0" in str(err.value)
    result = zs.classify(embedder, vectors, ["car"], TEMPLATES, multi_label=True)
    assert result.scores is not None and result.scores.shape == (2, 1)
    np.testing.assert_allclose(result.probs, 1.0)


def test_no_labels_is_an_error(embedder):
    vectors = np.zeros((1, embedder.dim), np.float32)
    with pytest.raises(QueryError, match="no labels"):
        zs.classify(embedder, vectors, [], TEMPLATES)
    with pytest.raises(QueryError, match="twice"):
        zs.classify(embedder, vectors, ["Car", "car"], TEMPLATES)
    with pytest.raises(QueryError, match="empty label"):
        zs.classify(embedder, vectors, ["car", " "], TEMPLATES)
    with pytest.raises(QueryError, match="shape"):
        zs.classify(embedder, np.zeros((1, 3), np.float32), ["car", "bus"], TEMPLATES)


# -- multi-label -------------------------------------------------------------------------------


def test_multi_label_scores_against_the_neutral_prompt(embedder, shared_images):
    vectors = zs.embed_images(embedder, [pil(p) for p in shared_images[:8]]).vectors
    labels = ["dog", "cat", "tree", "car"]
    result = zs.classify(embedder, vectors, labels, TEMPLATES, multi_label=True, threshold=0.5)

    assert embedder.model.logit_bias is None  # CLIP: no bias, so the neutral comparison
    assert result.scoring == "vs-neutral" and result.multi_label
    text = zs.label_embeddings(embedder, labels, TEMPLATES)
    neutral = zs.label_embeddings(embedder, [zs.NEUTRAL_LABEL], TEMPLATES)[0]
    margin = vectors @ text.T - (vectors @ neutral)[:, None]
    expected = 1.0 / (1.0 + np.exp(-result.logit_scale * margin))
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)
    # ... which is the two-way softmax of the label against the neutral prompts
    pair = np.stack([vectors @ text.T, np.repeat((vectors @ neutral)[:, None], 4, 1)], axis=-1)
    two_way = np.exp(result.logit_scale * pair)
    np.testing.assert_allclose(result.scores, two_way[..., 0] / two_way.sum(-1), atol=1e-5)
    np.testing.assert_array_equal(result.present, result.scores >= 0.5)
    # probabilities are still the softmax over labels
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)

    counts = []
    for threshold in (0.0, 0.3, 0.5, 0.7, 1.0):
        r = zs.classify(embedder, vectors, labels, TEMPLATES, multi_label=True, threshold=threshold)
        np.testing.assert_array_equal(r.present, r.scores >= threshold)
        counts.append(int(r.present.sum()))
    assert counts[0] == vectors.shape[0] * len(labels)  # threshold 0: everything is present
    assert counts == sorted(counts, reverse=True)  # a higher threshold never finds more
    assert counts[-1] == int((result.scores >= 1.0).sum())

    row = int(np.argmax(result.present.sum(axis=1)))
    found = result.present_labels(row)
    assert set(found) == {labels[j] for j in np.flatnonzero(result.present[row])}
    assert [result.scores[row, labels.index(x)] for x in found] == sorted(
        (result.scores[row, labels.index(x)] for x in found), reverse=True
    )
    with pytest.raises(QueryError, match="threshold"):
        zs.classify(embedder, vectors, labels, TEMPLATES, multi_label=True, threshold=1.5)


def test_multi_label_uses_the_models_own_bias_when_it_has_one(embedder, monkeypatch):
    vectors = zs.label_embeddings(embedder, ["a cat", "a dog"], TEMPLATES)  # stand-in images
    monkeypatch.setattr(embedder.model, "logit_bias", torch.nn.Parameter(torch.tensor([-3.0])))
    result = zs.classify(embedder, vectors, ["cat", "dog"], TEMPLATES, multi_label=True)
    assert result.scoring == "sigmoid+bias"
    expected = 1.0 / (1.0 + np.exp(-(result.logit_scale * result.cosine - 3.0)))
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)


# -- where in the image --------------------------------------------------------------------------


def test_where_maps_have_the_documented_shapes_and_costs(embedder, shared_images, count_embeds):
    image = pil(by_name(shared_images, "dashcam_solidWhiteRight.jpg")[0])  # wide: 960x540
    vector = zs.label_embeddings(embedder, ["car", "road"], TEMPLATES)[0]
    visual = embedder.model.visual

    patch = zs.where_map(embedder, image, vector, "patch")
    assert patch.shape == tuple(visual.grid_size) == (4, 4)  # tiny: 64 px / 16 px patches
    assert patch.dtype == np.float32 and np.all(np.abs(patch) <= 1.0 + 1e-5)  # cosines
    assert visual.output_tokens is False  # the flag is switched on for the call only

    before = count_embeds()
    occlusion = zs.where_map(embedder, image, vector, "occlusion", grid=5, batch_size=7)
    assert occlusion.shape == (5, 5) and np.isfinite(occlusion).all()
    assert count_embeds() - before == 1 + 25 == zs.where_map_cost("occlusion", 5)
    assert zs.where_map_cost("patch") == 1

    for heat in (patch, occlusion):
        shown = zs.overlay(image, heat, 0.6)
        assert shown.size == image.size and shown.mode == "RGB"
    assert np.array_equal(np.asarray(zs.overlay(image, patch, 0.0)), np.asarray(image))
    assert zs.overlay(image, np.zeros((3, 3)), 1.0).size == image.size  # flat map: no division

    with pytest.raises(QueryError, match="unknown method"):
        zs.where_map(embedder, image, vector, "gradcam")
    with pytest.raises(QueryError, match="opacity"):
        zs.overlay(image, patch, 2.0)


def test_patch_map_is_the_projected_patch_tokens_similarity(embedder, shared_images):
    image = pil(by_name(shared_images, "apple.jpg")[0])
    vector = zs.label_embeddings(embedder, ["apple", "pear"], TEMPLATES)[1]
    visual = embedder.model.visual
    side = visual.image_size[0]
    x = embedder.preprocess(image.resize((side, side), Image.Resampling.BICUBIC)).unsqueeze(0)
    with torch.no_grad():  # the ViT by hand: embed, transformer, ln_post, proj
        h = visual.transformer(visual._embeds(x))
        tokens = visual.ln_post(h)[:, 1:] @ visual.proj
        pooled = visual.ln_post(h)[:, 0] @ visual.proj
        tokens = torch.nn.functional.normalize(tokens, dim=-1)[0].numpy()
    np.testing.assert_allclose(
        pooled.numpy(), embedder.model.encode_image(x).detach().numpy(), atol=1e-5
    )
    expected = (tokens @ vector).reshape(visual.grid_size)
    np.testing.assert_allclose(zs.where_map(embedder, image, vector, "patch"), expected, atol=1e-5)


# -- evaluation, folders, CSV ----------------------------------------------------------------------


def test_evaluate_on_a_hand_made_example():
    labels = ["cat", "dog", "bird"]
    truths = ["cat", "cat", "cat", "Dog", "dog", "bird", None, "fish"]
    predictions = ["cat", "dog", "cat", "dog", "cat", "bird", "cat", "dog"]
    result = zs.evaluate(predictions, truths, labels)
    # rows: true cat, dog, bird; columns: predicted cat, dog, bird
    np.testing.assert_array_equal(result.confusion, [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert result.confusion.dtype == np.int64
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.recall == {"cat": pytest.approx(2 / 3), "dog": 0.5, "bird": 1.0}
    assert (result.evaluated, result.skipped) == (6, 2)

    no_birds = zs.evaluate(["cat", "bird"], ["cat", "cat"], labels)
    assert no_birds.recall["bird"] is None and no_birds.recall["cat"] == 0.5
    with pytest.raises(QueryError, match="nothing to evaluate"):
        zs.evaluate(["cat"], [None], labels)
    with pytest.raises(QueryError, match="not one of the labels"):
        zs.evaluate(["horse"], ["cat"], labels)


def test_folder_with_label_sub_folders_gives_the_confusion_counts(
    embedder, tmp_path, shared_images
):
    root = tmp_path / "sorted"
    copy_images(
        by_name(
            shared_images,
            "dashcam_solidWhiteCurve.jpg",
            "dashcam_solidWhiteRight.jpg",
            "dashcam_solidYellowLeft.jpg",
        ),
        root / "car",
    )
    copy_images(by_name(shared_images, "fruits.jpg", "apple.jpg", "orange.jpg"), root / "Fruit")
    copy_images(by_name(shared_images, "baboon.jpg"), root / "animal")
    copy_images(by_name(shared_images, "squirrel_cls.jpg"), root / "animal" / "2024")  # nested
    copy_images(by_name(shared_images, "sudoku.png"), root / "misc")  # not a label: no truth
    copy_images(by_name(shared_images, "board.jpg"), root)  # top level: no truth
    (root / "notes.txt").write_text("not an image, ignored")
    labels = ["car", "fruit", "animal"]

    result = zs.classify_folder(embedder, root, labels, TEMPLATES, batch_size=3)
    truth_of = {Path(p).name: t for p, t in zip(result.paths, result.truths, strict=True)}
    assert truth_of == {
        "dashcam_solidWhiteCurve.jpg": "car",
        "dashcam_solidWhiteRight.jpg": "car",
        "dashcam_solidYellowLeft.jpg": "car",
        "fruits.jpg": "fruit",
        "apple.jpg": "fruit",
        "orange.jpg": "fruit",
        "baboon.jpg": "animal",
        "squirrel_cls.jpg": "animal",
        "sudoku.png": None,
        "board.jpg": None,
    }
    assert result.failed == ()
    evaluation = result.evaluate()
    predicted = result.classification.top_labels
    expected = np.zeros((3, 3), np.int64)
    for truth, guess in zip(result.truths, predicted, strict=True):
        if truth is not None:
            expected[labels.index(truth), labels.index(guess)] += 1
    np.testing.assert_array_equal(evaluation.confusion, expected)
    np.testing.assert_array_equal(evaluation.confusion.sum(axis=1), [3, 3, 2])
    assert (evaluation.evaluated, evaluation.skipped) == (8, 2)
    assert evaluation.accuracy == pytest.approx(np.trace(expected) / 8)

    rows = list(csv.reader(io.StringIO(result.to_csv())))
    assert rows[0] == ["path", "top_label", "p(car)", "p(fruit)", "p(animal)"]
    assert len(rows) == 1 + 10
    for row, path, top, probs in zip(
        rows[1:], result.paths, predicted, result.classification.probs, strict=True
    ):
        assert row[0] == path and row[1] == top
        np.testing.assert_allclose([float(v) for v in row[2:]], probs, atol=1e-6)

    with pytest.raises(MediaError, match="folder not found"):
        zs.classify_folder(embedder, tmp_path / "nowhere", labels, TEMPLATES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(QueryError, match="no image files"):
        zs.classify_folder(embedder, tmp_path / "empty", labels, TEMPLATES)


def test_multi_label_csv_has_present_and_score_columns(embedder, shared_images):
    batch = zs.embed_images(embedder, shared_images[:3])
    result = zs.classify(
        embedder, batch.vectors, ["dog", "cat"], TEMPLATES, multi_label=True, threshold=0.0
    )
    rows = list(csv.reader(io.StringIO(classification_to_csv(batch.names, result))))
    assert rows[0] == [
        "path",
        "top_label",
        "p(dog)",
        "p(cat)",
        "present",
        "score(dog)",
        "score(cat)",
    ]
    assert all(set(r[4].split("; ")) == {"dog", "cat"} for r in rows[1:])  # threshold 0: both
    with pytest.raises(QueryError):
        classification_to_csv(batch.names[:1], result)


def test_a_bad_image_in_a_batch_is_reported_and_the_others_classified(
    embedder, tmp_path, shared_images
):
    good = copy_images(
        by_name(shared_images, "apple.jpg", "butterfly.jpg", "cards.png"), tmp_path / "good"
    )
    expected_reasons = write_bad_files(tmp_path / "bad", good[0])
    bad = sorted((tmp_path / "bad").iterdir())
    sources = [good[0], bad[0], good[1], *bad[1:], pil(good[2]), tmp_path / "missing.jpg"]

    batch = zs.embed_images(embedder, sources, batch_size=2)

    assert batch.names == (str(good[0]), str(good[1]), f"image {len(bad) + 2}")
    assert batch.indices == (0, 2, len(bad) + 2)
    assert batch.vectors.shape == (3, embedder.dim)
    reasons = {Path(f.path).name: f.reason for f in batch.failed}
    assert set(reasons) == {p.name for p in bad} | {"missing.jpg"}
    expected_reasons["dangling.jpg"] = "file not found"  # a link to nothing
    for name, reason in expected_reasons.items():
        assert reason in reasons[name], (name, reasons[name])
    assert "file not found" in reasons["missing.jpg"]
    # the good images' vectors are what they are alone
    alone = zs.embed_images(embedder, [good[0], good[1], pil(good[2])]).vectors
    np.testing.assert_allclose(batch.vectors, alone, atol=1e-5)

    result = zs.classify(embedder, batch.vectors, ["fruit", "insect"], TEMPLATES)
    assert result.probs.shape == (3, 2)

    folder = zs.classify_folder(embedder, tmp_path, ["fruit", "insect"], TEMPLATES)
    assert len(folder.paths) == 3 and len(folder.failed) == len(bad)
    assert {Path(f.path).name: f.reason for f in folder.failed} == {
        n: r for n, r in reasons.items() if n != "missing.jpg"
    }


# -- video ---------------------------------------------------------------------------------------


def test_classify_frames_of_a_real_video(embedder):
    video = require_media("video") / "realshort.mp4"
    info = probe_video(video)
    sampled = list(FrameSampler(info, every=0.2))
    labels = ["person", "street", "sky"]

    result = zs.classify_frames(embedder, sampled, labels, TEMPLATES, batch_size=4)
    assert len(result.timestamps) == len(sampled) == result.classification.probs.shape[0] >= 5
    np.testing.assert_allclose(result.timestamps, [f.timestamp for f in sampled])
    assert np.all(np.diff(result.timestamps) > 0)
    np.testing.assert_allclose(result.classification.probs.sum(axis=1), 1.0, atol=1e-5)
    series = result.series()
    assert list(series) == labels and all(len(v) == len(sampled) for v in series.values())
    # the same as classifying the frames as images
    direct = zs.classify(
        embedder, embedder.embed_images([f.image for f in sampled]), labels, TEMPLATES
    )
    np.testing.assert_allclose(result.classification.probs, direct.probs, atol=1e-5)

    streamed = zs.classify_video(embedder, video, labels, TEMPLATES, every=0.2, batch_size=4)
    np.testing.assert_allclose(streamed.timestamps, result.timestamps)
    np.testing.assert_allclose(
        streamed.classification.probs, result.classification.probs, atol=1e-5
    )
    assert streamed.truncated is None

    with pytest.raises(QueryError, match="multi-label"):  # checked before decoding anything
        zs.classify_video(embedder, video, ["person"], TEMPLATES)


def test_zero_shot_charts_show_html_names_and_labels_as_text(embedder, shared_images):
    import json

    from ui.components import confusion_figure, label_bars, zeroshot_heatmap

    labels = ["<b>apple</b>", '<a href="https://evil.example">monkey</a>']
    names = ['<a href="https://evil.example">x</a>.jpg', "b.jpg"]
    batch = zs.embed_images(embedder, [pil(p) for p in shared_images[:2]])
    result = zs.classify(embedder, batch.vectors, labels, TEMPLATES)
    figures = [
        zeroshot_heatmap(result.cosine, result.labels, names),
        label_bars(result.probs[0], result.labels, "probability"),
        confusion_figure(np.eye(2, dtype=np.int64), result.labels),
    ]
    for fig in figures:
        data = json.loads(fig.to_json())["data"]
        shown = json.dumps(data, ensure_ascii=False)
        assert "<a" not in shown and "<b>" not in shown
        assert "&lt;b&gt;apple&lt;/b&gt;" in shown
    assert "1. &lt;a href" in json.dumps(figures[0].to_dict()["data"][0]["y"][0])
