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


TINY_BLIP_VERSION = "v1"
# Text the tiny captioner's WordPiece vocabulary is trained on: words a caption would use.
_CAPTION_WORDS = """
a an the of on in with and at by to from near over under two three man woman person people child
dog cat car truck bus bicycle motorcycle road street highway lane lanes traffic light sign stop
building house tree trees sky cloud water sea beach table desk box hand holding picture photo of
is are sitting standing walking driving riding white black red blue green yellow small large
front back side left right day night rain snow fog city field grass room window door wood piece
working looking playing there this that some many view close up top bottom video frame scene
"""


def tiny_blip_dir(cache: Path) -> Path:
    """A folder holding a tiny BLIP captioner (model, image processor, tokenizer), built if missing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = cache / f"tiny-blip-{TINY_BLIP_VERSION}"
    with _build_lock:
        if (folder / "config.json").exists():
            return folder
        words = _CAPTION_WORDS.split()
        wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
        wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        wordpiece.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
        wordpiece.train_from_iterator(
            [" ".join(words)] * 4,
            trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials),
        )
        tokenizer = BertTokenizerFast(
            tokenizer_object=wordpiece,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            bos_token="[DEC]",
            model_max_length=64,
        )
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        config = BlipConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "encoder_hidden_size": 32,
                "max_position_embeddings": 64,
                "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
                "sep_token_id": tokenizer.sep_token_id,
                "eos_token_id": tokenizer.sep_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            # BLIP's vision default initializer_range is 1e-10: weights ~0, every image alike.
            vision_config={
                "initializer_range": 0.02,
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "image_size": 64,
                "patch_size": 16,
            },
            projection_dim=32,
        )
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
        with torch.no_grad():
            # At random init the decoder's cross-attention is too weak for the image to change the
            # text: every frame got the same caption. Stronger, captions differ with the image.
            for layer in model.text_decoder.bert.encoder.layer:
                layer.crossattention.self.value.weight.mul_(6.0)
                layer.crossattention.output.dense.weight.mul_(6.0)
        processor = BlipProcessor(
            image_processor=BlipImageProcessor(size={"height": 64, "width": 64}),
            tokenizer=tokenizer,
        )
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        os.replace(tmp, folder)
    return folder
