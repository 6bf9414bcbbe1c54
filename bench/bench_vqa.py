"""Video question answering with a local VLM: time to the first answer and to a follow-up, with and
without caches, for the SmolVLM2-256M and -500M architectures.

Models: `SmolVLMForConditionalGeneration` built by hand at the published sizes, random weights
(seeded): the same compute as the real models, meaningless text.
  vision   SigLIP base patch16 at 512x512 (hidden 768, 12 layers, 12 heads, MLP 3072; ~93M),
           pixel shuffle 4: 1024 patches -> 64 visual tokens per frame (frames are not split)
  256M     text SmolLM2-135M: hidden 576, 30 layers, 9 heads (3 kv), MLP 1536, vocab 49280
  500M     text SmolLM2-360M: hidden 960, 32 layers, 15 heads (5 kv), MLP 2560, vocab 49280
The processor is SmolVLM's with the real image settings (512 tiles, 64 image tokens) and the tiny
SmolVLM's tokenizer (the real one cannot be downloaded offline; text is a small share of the prompt).

Per model, 8 frames spread over a real video (decoded with core.media.FrameSampler, longest side
768, as the QA code does), every answer forced to 32 new tokens (min_new_tokens = max_new_tokens):
  first answer        decode + preprocess + vision tower + generate (`LocalVlm.answer`, empty caches)
  follow-up, the same frames and the first turn as history, four ways:
    no cache          decode + preprocess + generate (vision tower included)
    decoded frames    preprocess + generate: the frames come from a per-video cache (core.qa)
    preprocessed      generate only: the processor's pixel tensors are reused
    vision features   `LocalVlm.answer` as shipped: the frames' vision-tower output is cached, so
                      only the text is tokenized and the language model runs
Also: each stage alone (decode, preprocess, vision tower), prompt tokens, visual tokens per frame.
One warm-up answer (1 frame, 2 tokens) per model first; then each step runs `--repeats` times (2)
and the fastest counts, with how busy the process kept the cores (about 6 minutes in all).

Run:  .venv/bin/python bench/bench_vqa.py [--video PATH] [--frames 8] [--tokens 32]
Writes bench/results/vqa.json and appends a dated table to bench/README.md (or, when that file
does not exist, bench/README_vqa.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.media import FrameSampler, probe_video  # noqa: E402
from core.models.tiny import tiny_smolvlm_dir  # noqa: E402
from core.models.vlm import LocalVlm, Turn, VlmFrame, visual_tokens_per_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VIDEO = ROOT.parent / "shared" / "media" / "video" / "dashcam_highway.mp4"
SYSTEM = "You answer questions about a video from a few of its frames, each labelled with its time."
QUESTION = "What happens in this video?"
FOLLOW_UP = "What colour is the car in front, and when does it change lanes?"

VISION = {  # SigLIP base patch16-512
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
}
TEXT = {
    "SmolVLM2-256M": {  # SmolLM2-135M
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
    },
    "SmolVLM2-500M": {  # SmolLM2-360M
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
}
SCALE_FACTOR = 4


def build(name: str, tiny_dir: Path) -> LocalVlm:
    from transformers import (
        AutoProcessor,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
    )

    tiny = AutoProcessor.from_pretrained(tiny_dir)
    tokenizer = tiny.tokenizer
    ids = tokenizer.convert_tokens_to_ids
    config = SmolVLMConfig(
        vision_config=VISION,
        text_config={
            "model_type": "llama",
            "vocab_size": 49280,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "tie_word_embeddings": False,
            "bos_token_id": ids("<|im_start|>"),
            "eos_token_id": ids("<end_of_utterance>"),
            "pad_token_id": ids("<|endoftext|>"),
            **TEXT[name],
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids("<end_of_utterance>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    tile = VISION["image_size"]
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            do_image_splitting=True,
            size={"longest_edge": 4 * tile},
            max_image_size={"longest_edge": tile},
        ),
        tokenizer=tokenizer,
        video_processor=tiny.video_processor,
        image_seq_len=(tile // VISION["patch_size"]) ** 2 // SCALE_FACTOR**2,
        chat_template=tiny.chat_template,
    )
    return LocalVlm(
        model, processor, key=f"bench/{name}", name=name, device="cpu", real_weights=False
    )


def decode(video: Path, n: int) -> list[VlmFrame]:
    info = probe_video(video)
    sampler = FrameSampler(info, every=max(info.duration / n, 0.1), max_frames=n, max_side=768)
    return [VlmFrame(f.image, f.timestamp) for f in sampler]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Runs:
    """Times each measured step `repeats` times; keeps the fastest (others' load only slows) and
    how busy this process kept the cores (CPU time / wall time / threads: low means contention)."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.raw: dict[str, list[float]] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, step: str, fn, before=None):
        times, busy = [], []
        for _ in range(self.repeats):
            if before:
                before()
            cpu = cpu_seconds()
            value, seconds = timed(fn)
            times.append(seconds)
            busy.append((cpu_seconds() - cpu) / seconds / torch.get_num_threads())
        self.raw[step] = [round(t, 3) for t in times]
        self.cpu[step] = round(busy[times.index(min(times))], 2)
        return value, min(times)


def run_model(
    name: str, tiny_dir: Path, video: Path, n_frames: int, tokens: int, repeats: int
) -> dict:
    (vlm, build_s) = timed(lambda: build(name, tiny_dir))
    params = sum(p.numel() for p in vlm.model.parameters())
    vision_params = sum(p.numel() for p in vlm.model.model.vision_model.parameters())
    vlm.model.generation_config.min_new_tokens = tokens  # forced: random weights stop anywhere
    print(f"{name}: built in {build_s:.1f} s, {params / 1e6:.0f}M parameters", flush=True)
    run = Runs(repeats)

    warm = decode(video, 1)
    vlm.answer(warm, "Hi?", max_new_tokens=2)  # one-time costs (kernels, allocator)

    # First answer: nothing cached (the frame feature cache is emptied before each run).
    frames, decode_s = run("decode", lambda: decode(video, n_frames))
    first, answer_s = run(
        "first_answer",
        lambda: vlm.answer(frames, QUESTION, max_new_tokens=tokens, system=SYSTEM),
        before=vlm._encoded.clear,
    )
    first_usage = dict(vlm.last_usage)
    assert first_usage["new_tokens"] == tokens and not first_usage["cached_frames"]
    history = [Turn("user", QUESTION), Turn("assistant", first)]

    def prepare(fr):
        return vlm.prepare(fr, FOLLOW_UP, history, system=SYSTEM)

    def generate(inputs):
        return vlm.generate(inputs, max_new_tokens=tokens)

    # Follow-up, four ways.
    _, no_cache_s = run("no_cache", lambda: generate(prepare(decode(video, n_frames))))
    _, decoded_s = run("decoded_frames_cached", lambda: generate(prepare(frames)))
    inputs, preprocess_s = run("preprocess", lambda: prepare(frames))
    plain_text, generate_s = run("preprocessed_cached", lambda: generate(inputs))
    follow_tokens = vlm.last_usage["prompt_tokens"]
    cached_text, features_s = run(
        "vision_features_cached",
        lambda: vlm.answer(frames, FOLLOW_UP, history, max_new_tokens=tokens, system=SYSTEM),
    )
    assert vlm.last_usage["cached_frames"] and vlm.last_usage["new_tokens"] == tokens

    # The vision tower alone, on the preprocessed frames.
    def vision():
        with torch.inference_mode():
            return vlm.model.model.get_image_features(
                inputs["pixel_values"], inputs["pixel_attention_mask"]
            )

    _, vision_s = run("vision_tower", vision)
    per_frame = visual_tokens_per_frame(vlm, size=frames[0].image.size)
    result = {
        "parameters_m": round(params / 1e6, 1),
        "vision_parameters_m": round(vision_params / 1e6, 1),
        "build_s": round(build_s, 2),
        "frames": len(frames),
        "frame_size": list(frames[0].image.size),
        "visual_tokens_per_frame": per_frame,
        "prompt_tokens_first": first_usage["prompt_tokens"],
        "prompt_tokens_follow_up": follow_tokens,
        "new_tokens": tokens,
        "stages_s": {
            "decode": round(decode_s, 3),
            "preprocess": round(preprocess_s, 3),
            "vision_tower": round(vision_s, 3),
            "generate_with_pixels": round(generate_s, 3),
        },
        "first_answer_s": round(decode_s + answer_s, 3),
        "follow_up_s": {
            "no_cache": round(no_cache_s, 3),
            "decoded_frames_cached": round(decoded_s, 3),
            "preprocessed_cached": round(generate_s, 3),
            "vision_features_cached": round(features_s, 3),
        },
        "feature_cache_same_text": cached_text == plain_text,
        "runs_s": run.raw,
        "cpu_busy_of_fastest": run.cpu,
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


SERIAL_STEPS = ("decode", "preprocess")  # mostly one thread: low "busy" is not contention


def readme_table(result: dict) -> str:
    lines = [
        f"### Video QA with a local VLM ({result['date']})",
        "",
        f"`bench/bench_vqa.py`: SmolVLM2 architectures with random weights, "
        f"{result['machine']['cpus']} CPU cores, torch threads {result['machine']['torch_threads']}, "
        f"float32; {result['frames']} frames of `{result['video']}` (longest side 768), "
        f"{result['tokens']} new tokens forced per answer. Seconds, fastest of "
        f"{result['repeats']} runs after a warm-up.",
        "",
        "| model | params | visual tokens / frame | prompt tokens | first answer | "
        "follow-up: no cache | decoded frames cached | preprocessed cached (generate only) | "
        "vision features cached (as shipped) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["models"].items():
        f = row["follow_up_s"]
        lines.append(
            f"| {name} | {row['parameters_m']:.0f}M | {row['visual_tokens_per_frame']:.0f} | "
            f"{row['prompt_tokens_follow_up']} | {row['first_answer_s']:.1f} | "
            f"{f['no_cache']:.1f} | {f['decoded_frames_cached']:.1f} | "
            f"{f['preprocessed_cached']:.1f} | {f['vision_features_cached']:.1f} |"
        )
    lines += [
        "",
        f"| model | decode {result['frames']} frames | preprocess | vision tower | "
        "generate (with pixels) |",
    ]
    lines.append("|---|---:|---:|---:|---:|")
    for name, row in result["models"].items():
        s = row["stages_s"]
        lines.append(
            f"| {name} | {s['decode']:.2f} | {s['preprocess']:.2f} | {s['vision_tower']:.2f} | "
            f"{s['generate_with_pixels']:.2f} |"
        )
    same = all(r["feature_cache_same_text"] for r in result["models"].values())
    lines += [
        "",
        f"Peak RSS {result['peak_rss_mb']:.0f} MB. Cores kept busy by the fastest model runs: "
        f"{min(busy for r in result['models'].values() for step, busy in r['cpu_busy_of_fastest'].items() if step not in SERIAL_STEPS):.2f}"
        " at least (1 = every torch thread busy; lower means another process competed; decoding"
        " and preprocessing are mostly single-threaded and not counted). "
        "The cached-features answer "
        f"{'equals' if same else 'DIFFERS from'} the from-scratch answer token for token.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs per step; the fastest counts")
    parser.add_argument("--models", nargs="+", default=list(TEXT), choices=list(TEXT))
    parser.add_argument("--no-readme", action="store_true", help="do not append to the README")
    args = parser.parse_args()

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before: {' '.join(load)}")
    started = time.perf_counter()
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dir = tiny_smolvlm_dir(Path(tmp))
        for name in args.models:
            models[name] = run_model(
                name, tiny_dir, args.video, args.frames, args.tokens, args.repeats
            )
            gc.collect()  # the model is freed before the next is built
    result = {
        "benchmark": "vqa",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load,
        },
        "video": args.video.name,
        "frames": args.frames,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "models": models,
        "total_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vqa.json").write_text(json.dumps(result, indent=2))
    table = readme_table(result)
    print("\n" + table)
    print(f"wrote {RESULTS / 'vqa.json'} in {result['total_s']:.0f} s")
    if not args.no_readme:
        readme = ROOT / "bench" / "README.md"
        if not readme.exists():
            readme = ROOT / "bench" / "README_vqa.md"
        with open(readme, "a", encoding="utf-8") as fh:
            fh.write("\n" + table)
        print(f"appended the table to {readme}")


if __name__ == "__main__":
    main()
