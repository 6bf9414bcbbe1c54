"""Tiny offline models: the real model classes at tiny sizes with random weights.

They are built without any download (the CLIP tokenizer ships inside open_clip), cached under
`Settings.model_cache`, and loaded by the same code that loads real weights. Outputs are
meaningless; they exist so the whole app and its tests run offline.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch

TINY_CLIP_NAME = "framescope-tiny-clip"
TINY_CLIP_VERSION = "v2"  # bump when the config changes, so caches and indexes are rebuilt
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    # Real vocabulary and context, so the bundled tokenizer's ids and truncation behave as in ViT-B-32.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_build_lock = threading.Lock()


def register_tiny_clip(cache: Path) -> Path:
    """Write the tiny CLIP config where open_clip's registry finds it; returns the config folder."""
    import open_clip

    folder = cache / "tiny-clip-config"
    config_path = folder / f"{TINY_CLIP_NAME}.json"
    if not config_path.exists() or json.loads(config_path.read_text()) != TINY_CLIP_CONFIG:
        folder.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(folder)
    return folder


def tiny_clip_weights(cache: Path) -> Path:
    """Path of the tiny CLIP weights file, built (seeded, so the same everywhere) if missing."""
    import open_clip

    register_tiny_clip(cache)
    path = cache / f"{TINY_CLIP_NAME}-{TINY_CLIP_VERSION}.pt"
    with _build_lock:
        if not path.exists():
            torch.manual_seed(0)
            model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
            # With random weights the class and position embeddings, shared by every image, dominate
            # the output (any two images score ~0.95). Zeroed, image content drives the embedding and
            # similarities spread out as real CLIP's do, so cutoffs and de-duplication behave alike.
            with torch.no_grad():
                model.visual.class_embedding.zero_()
                model.visual.positional_embedding.zero_()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
    return path
