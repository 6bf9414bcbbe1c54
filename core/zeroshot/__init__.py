"""Zero-shot classification with CLIP: labels in, per-image probabilities out, no training.

Modules:
    labels    label and template parsing, presets, and the cached prompt-ensemble label vectors
    classify  `Classification` and `classify`: softmax or multi-label scores for image vectors
    batch     images in (`embed_images`) and folders with ground truth (`classify_folder`, CSV)
    video     label probabilities over time for video frames
    maps      where in the image a label is: heat maps and their overlay

Typical use::

    labels, warnings = parse_labels("car, truck\\nbus", embedder)
    batch = embed_images(embedder, paths)              # bad files end up in batch.failed
    result = classify(embedder, batch.vectors, labels)
    result.top_labels, result.probs                    # (n,), (n, n_labels)
    heat = where_map(embedder, image, label_embeddings(embedder, labels)[0])
    overlay(image, heat, 0.5).save("where.png")

Everything raises `QueryError` (bad labels, templates or options) or `MediaError` (an unusable
file) with a message meant for the user.
"""

from __future__ import annotations

from core.zeroshot.batch import (
    EmbeddedImages,
    Evaluation,
    FolderClassification,
    classify_folder,
    embed_images,
    evaluate,
)
from core.zeroshot.classification import NEUTRAL_LABEL, Classification, classify
from core.zeroshot.labels import (
    DEFAULT_TEMPLATES,
    LABEL_PRESETS,
    clear_label_cache,
    label_embeddings,
    parse_labels,
    parse_templates,
    validate_templates,
)
from core.zeroshot.maps import WHERE_METHODS, overlay, where_map, where_map_cost
from core.zeroshot.video import FrameClassification, classify_frames, classify_video

__all__ = [
    "DEFAULT_TEMPLATES",
    "LABEL_PRESETS",
    "NEUTRAL_LABEL",
    "WHERE_METHODS",
    "Classification",
    "EmbeddedImages",
    "Evaluation",
    "FolderClassification",
    "FrameClassification",
    "classify",
    "classify_folder",
    "classify_frames",
    "classify_video",
    "clear_label_cache",
    "embed_images",
    "evaluate",
    "label_embeddings",
    "overlay",
    "parse_labels",
    "parse_templates",
    "validate_templates",
    "where_map",
    "where_map_cost",
]
