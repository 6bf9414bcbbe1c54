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


# -- tiny vision-language models (SmolVLM2 and Qwen2.5-VL classes) --------------------------------

TINY_SMOLVLM_VERSION = "v1"
TINY_QWEN25VL_VERSION = "v1"
# Words the tiny VLM tokenizers are trained on: captions plus the words of questions and answers.
_VLM_WORDS = (
    _CAPTION_WORDS
    + """
what where when who why how which does do did can could is are was were happen happens happened
frame frames video image images time second seconds minute at after before first last then again
answer question describe tell me about color colour number count many much yes no not see seen shows
show visible moment scene change changes moving moves object objects it they he she you i we
system user assistant frame at 0 1 2 3 4 5 6 7 8 9 : , . ? !
"""
)


def _tiny_bpe(specials: list[str], vocab_size: int = 600):
    """A small byte-level BPE tokenizer (like SmolLM2's and Qwen2's) trained on _VLM_WORDS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [_VLM_WORDS] * 4,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return bpe


def _save_atomically(folder: Path, *parts) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    for part in parts:
        part.save_pretrained(tmp)
    os.replace(tmp, folder)


# SmolVLM2's prompt format: "<|im_start|>User:<image>question<end_of_utterance>\nAssistant:".
TINY_SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}"
    "{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def tiny_smolvlm_dir(cache: Path) -> Path:
    """A folder holding a tiny SmolVLM2-class model and processor (random weights), built if missing.

    64x64 tiles of 8x8 patches, pixel shuffle 2: 16 image tokens per tile. A single image is split
    into up to 2x2 tiles plus a global view (row/col tokens exercised); frames are not split.
    """
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    folder = cache / f"tiny-smolvlm-{TINY_SMOLVLM_VERSION}"
    with _build_lock:
        if (folder / "config.json").exists():
            return folder
        tiles = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
        specials = [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<end_of_utterance>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
            *tiles,
        ]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_tiny_bpe(specials),
            bos_token="<|im_start|>",
            eos_token="<end_of_utterance>",
            pad_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            model_max_length=4096,
            extra_special_tokens={
                "fake_image_token": "<fake_token_around_image>",
                "image_token": "<image>",
                "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>",
            },
        )
        tile, patch, scale = 64, 8, 2
        ids = tokenizer.convert_tokens_to_ids
        config = SmolVLMConfig(
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": tile,
                "patch_size": patch,
                "initializer_range": 0.02,
            },
            text_config={
                "model_type": "llama",
                "vocab_size": len(tokenizer),
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
                "rope_theta": 100000.0,
                "initializer_range": 0.02,
                "bos_token_id": ids("<|im_start|>"),
                "eos_token_id": ids("<end_of_utterance>"),
                "pad_token_id": ids("<|endoftext|>"),
            },
            scale_factor=scale,
            image_token_id=ids("<image>"),
            pad_token_id=ids("<|endoftext|>"),
        )
        torch.manual_seed(0)
        model = SmolVLMForConditionalGeneration(config).eval()
        model.generation_config.eos_token_id = ids("<end_of_utterance>")
        model.generation_config.pad_token_id = ids("<|endoftext|>")
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(
                do_image_splitting=True,
                size={"longest_edge": 2 * tile},
                max_image_size={"longest_edge": tile},
            ),
            tokenizer=tokenizer,
            video_processor=SmolVLMVideoProcessor(
                video_sampling={"fps": 1, "max_frames": 8, "video_size": {"longest_edge": tile}},
                max_image_size={"longest_edge": tile},
            ),
            image_seq_len=(tile // patch) ** 2 // scale**2,
            chat_template=TINY_SMOLVLM_CHAT_TEMPLATE,
        )
        _save_atomically(folder, model, processor)
    return folder


# Qwen2.5-VL's prompt format (ChatML): "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>
# question<|im_end|>\n<|im_start|>assistant\n".
TINY_QWEN25VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen25vl_dir(cache: Path) -> Path:
    """A folder holding a tiny Qwen2.5-VL model and processor (random weights), built if missing.

    14-pixel patches merged 2x2; images are scaled to at most 112x112 pixels: <= 16 image tokens.
    """
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = cache / f"tiny-qwen25vl-{TINY_QWEN25VL_VERSION}"
    with _build_lock:
        if (folder / "config.json").exists():
            return folder
        specials = [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_tiny_bpe(specials),
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            model_max_length=4096,
        )
        ids = tokenizer.convert_tokens_to_ids
        hidden, heads = 64, 4
        config = Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": hidden,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": heads,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
                "max_window_layers": 2,
                # The three rotary sections (time, height, width) share head_dim / 2 frequencies.
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 1000000.0,
                    "mrope_section": [2, 3, 3],
                },
                "initializer_range": 0.02,
                "bos_token_id": None,  # a small vocabulary has no id 151643
                "eos_token_id": ids("<|im_end|>"),
                "pad_token_id": ids("<|endoftext|>"),
            },
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": hidden,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 56,
                "fullatt_block_indexes": [1],
                "initializer_range": 0.02,
            },
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        model.generation_config.bos_token_id = None
        model.generation_config.eos_token_id = ids("<|im_end|>")
        model.generation_config.pad_token_id = ids("<|endoftext|>")
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
            chat_template=TINY_QWEN25VL_CHAT_TEMPLATE,
        )
        _save_atomically(folder, model, processor)
    return folder


TINY_LLM_VERSION = "v1"
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_llm_dir(cache: Path) -> Path:
    """A folder holding a tiny Qwen2-class chat model (text only), built if missing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = cache / f"tiny-llm-{TINY_LLM_VERSION}"
    with _build_lock:
        if (folder / "config.json").exists():
            return folder
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        trainer = trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        bpe.train_from_iterator(
            [_CAPTION_WORDS * 4, "summary chapter video scene shows minute second time"], trainer
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            model_max_length=2048,
        )
        tokenizer.chat_template = _QWEN_CHAT_TEMPLATE
        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            bos_token_id=None,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).eval()
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    return folder
