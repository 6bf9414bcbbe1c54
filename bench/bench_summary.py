"""Video summaries on CPU: time by stage for `core.summarize.summarize_video`, in both modes.

Models are built from configs at the published sizes with random (seeded) weights: the same compute
as the real models, meaningless text.
  VLM  SmolVLM2-256M architecture, built by `bench_vqa.build` (SigLIP base patch16-512 vision
       tower, SmolLM2-135M text: hidden 576, 30 layers, 9 heads / 3 kv, MLP 1536, vocab 49280,
       pixel shuffle 4). The processor is set to single 512 px images, never split: 64 visual
       tokens per frame.
  LLM  Qwen2.5-0.5B architecture (Qwen2Config: hidden 896, 24 layers, 14 heads / 2 kv, MLP 4864,
       vocab 151936, tied embeddings), wrapped in `core.models.llm.LocalLlm` with real_weights=True.
Tokenizers are the small byte-level BPEs that core.models.tiny trains offline (about 600 ids;
the real ones cannot be downloaded). The models keep their real vocabularies (embedding and LM-head
cost unchanged); generated ids are folded into the small tokenizer's range when decoded, so the
descriptions are text of about the real length and feed the LLM prompts as they would.
Generation length is forced (min_new_tokens = max_new_tokens) so the cost is deterministic:
VLM descriptions `--vlm-tokens` (32), LLM calls `--llm-tokens` (48; chapter titles ask for 16 and
get 16).

One run: a warm-up call per model, then `summarize_video` on the same video in INDEPENDENT and then
CONTEXT mode, each on a fresh `Library(tmpdir)` (no cached descriptions) and with the VLM's
vision-feature cache emptied. Stages:
  decode     time spent pulling chunks (frames) out of `make_chunks` (PyAV decode + resize)
  describe   VLM calls (summary.seconds["describe"])
  reconcile  LLM calls (summary.seconds["reconcile"]: running summaries in context mode,
             chapters, titles and the short summary)
  wall       the whole `summarize_video` call (also hashes the file and writes the library)

Run:  .venv/bin/python bench/bench_summary.py [--video PATH] [--chunk-seconds 60] [--frames 2]
Writes bench/results/summary.json and appends a dated table to bench/README.md (or, when that file
does not exist, bench/README_summary.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _machine import CPUS, OthersLoad  # noqa: E402
from bench_vqa import build as build_vlm  # noqa: E402

import core.summarize as summarize_mod  # noqa: E402
from core.library import Library  # noqa: E402
from core.media import file_sha256, probe_video  # noqa: E402
from core.models.llm import LocalLlm  # noqa: E402
from core.models.tiny import tiny_llm_dir, tiny_smolvlm_dir  # noqa: E402
from core.models.vlm import LocalVlm, VlmFrame, visual_tokens_per_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VIDEO = Path("/tmp/vbench/long_gop_10min.mp4")
QWEN25_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
TILE = 512


class FoldedTokenizer:
    """A tokenizer whose decode maps ids beyond its vocabulary back into it (id mod size), so a
    model with a larger vocabulary and random weights still yields text of a realistic length."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self._n = len(tokenizer)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def __len__(self) -> int:
        return self._n

    def _fold(self, ids):
        if torch.is_tensor(ids):
            ids = ids.tolist()
        return [self._fold(i) if isinstance(i, list) else int(i) % self._n for i in ids]

    def decode(self, ids, **kwargs):
        return self._tok.decode(self._fold(ids), **kwargs)

    def batch_decode(self, ids, **kwargs):
        return self._tok.batch_decode(self._fold(ids), **kwargs)


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens = 0
        self.new_tokens = 0

    def as_dict(self) -> dict:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "mean_prompt_tokens": round(self.prompt_tokens / self.calls, 1) if self.calls else 0,
        }


def force_length(model, cap: int, counter: Counter) -> None:
    """Every generate() call runs exactly min(requested, cap) new tokens."""
    original = model.generate

    def generate(*args, **kwargs):
        n = min(int(kwargs.get("max_new_tokens") or cap), cap)
        kwargs["max_new_tokens"] = kwargs["min_new_tokens"] = n
        out = original(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        prompt = int(ids.shape[1]) if ids is not None else 0
        counter.calls += 1
        counter.prompt_tokens += prompt
        counter.new_tokens += int(out.shape[1]) - prompt
        return out

    model.generate = generate


def make_vlm(cache: Path, tokens: int, counter: Counter) -> LocalVlm:
    vlm = build_vlm("SmolVLM2-256M", tiny_smolvlm_dir(cache))
    image_processor = vlm.processor.image_processor
    image_processor.do_image_splitting = False
    image_processor.size = {"longest_edge": TILE}
    image_processor.max_image_size = {"longest_edge": TILE}
    vlm.real_weights = True
    vlm.tokenizer = FoldedTokenizer(vlm.tokenizer)
    force_length(vlm.model, tokens, counter)
    return vlm


def make_llm(cache: Path, tokens: int, counter: Counter) -> LocalLlm:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir(cache))
    config = Qwen2Config(
        **QWEN25_05B,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(config).eval()
    force_length(model, tokens, counter)
    return LocalLlm(
        model,
        FoldedTokenizer(tokenizer),
        name="Qwen2.5-0.5B-size (random)",
        key="bench/qwen2.5-0.5b-size",
        device="cpu",
        real_weights=True,
    )


def timed_chunks(record: dict):
    """`make_chunks` whose time spent producing each chunk (frame decoding) is added up."""
    original = summarize_mod.make_chunks

    def make_chunks(*args, **kwargs):
        it = original(*args, **kwargs)
        while True:
            t0 = time.monotonic()
            try:
                chunk = next(it)
            except StopIteration:
                record["decode"] += time.monotonic() - t0
                return
            record["decode"] += time.monotonic() - t0
            record["frames"] += len(chunk.frames)
            yield chunk

    return original, make_chunks


def run_mode(mode, video, info, vlm, llm, vlm_count, llm_count, args) -> dict:
    vlm._encoded.clear()
    for c in (vlm_count, llm_count):
        c.calls = c.prompt_tokens = c.new_tokens = 0
    record = {"decode": 0.0, "frames": 0}
    original, wrapped = timed_chunks(record)
    summarize_mod.make_chunks = wrapped
    load = OthersLoad().start()
    try:
        with tempfile.TemporaryDirectory() as home:
            library = Library(Path(home))
            t0 = time.monotonic()
            summary = summarize_mod.summarize_video(
                video,
                info,
                vlm,
                llm,
                library,
                title="Test pattern",
                chunk_seconds=args.chunk_seconds,
                frames_per_chunk=args.frames,
                mode=mode,
            )
            wall = time.monotonic() - t0
            close = getattr(library, "close", None)
            if close:
                close()
    finally:
        summarize_mod.make_chunks = original
    others = load.stop()
    describe = summary.seconds["describe"]
    reconcile = summary.seconds["reconcile"]
    minutes = info.duration / 60
    row = {
        "mode": mode,
        "chunks": len(summary.descriptions),
        "frames": record["frames"],
        "chapters": len(summary.chapters),
        "decode_s": round(record["decode"], 2),
        "describe_s": round(describe, 2),
        "decode_plus_describe_s": round(record["decode"] + describe, 2),
        "reconcile_s": round(reconcile, 2),
        "other_s": round(wall - record["decode"] - describe - reconcile, 2),
        "wall_s": round(wall, 2),
        "s_per_video_minute": round(wall / minutes, 2),
        "describe_s_per_chunk": round(describe / max(1, len(summary.descriptions)), 2),
        "vlm": vlm_count.as_dict(),
        "llm": llm_count.as_dict(),
        "others_cpu_share": others,
        "description_chars_mean": round(
            sum(len(d.text) for d in summary.descriptions) / max(1, len(summary.descriptions)), 1
        ),
    }
    print(json.dumps(row), flush=True)
    return row


def table(result: dict) -> str:
    lines = [
        "| mode | chunks (frames) | decode | describe (VLM) | decode + describe | "
        "reconcile (LLM) | other | total wall | s per video minute | VLM calls | LLM calls "
        "(mean prompt tokens) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["modes"].values():
        lines.append(
            f"| {r['mode']} | {r['chunks']} ({r['frames']}) | {r['decode_s']:.1f} | "
            f"{r['describe_s']:.1f} | {r['decode_plus_describe_s']:.1f} | {r['reconcile_s']:.1f} | "
            f"{r['other_s']:.1f} | {r['wall_s']:.1f} | {r['s_per_video_minute']:.1f} | "
            f"{r['vlm']['calls']} | {r['llm']['calls']} ({r['llm']['mean_prompt_tokens']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def readme_section(result: dict) -> str:
    m = result["machine"]
    others = ", ".join(
        f"{r['mode']} {r['others_cpu_share']:.0%}"
        for r in result["modes"].values()
        if r["others_cpu_share"] is not None
    )
    wait = result["waited_for_other_benchmarks"]
    return (
        f"\n### Video summary pipeline ({result['date']})\n\n"
        f"`bench/bench_summary.py`: `summarize_video` on `{result['video']}` "
        f"({result['video_info']}), {result['chunk_seconds']:g} s chunks, "
        f"{result['frames_per_chunk']} frames per chunk, {m['cpus']} CPU cores, torch threads "
        f"{m['torch_threads']}, float32. VLM: SmolVLM2-256M architecture ({result['vlm_params_m']:.0f}M "
        f"params, {result['visual_tokens_per_frame']:.0f} visual tokens per 512 px frame, no "
        f"splitting); LLM: Qwen2.5-0.5B architecture ({result['llm_params_m']:.0f}M params, vocab "
        f"151936). Random weights, small offline-trained tokenizers (~600 ids; generated ids folded "
        f"into them on decode), real_weights=True; generation forced to {result['vlm_tokens']} new "
        f"tokens per chunk description and {result['llm_tokens']} per LLM call (16 for chapter "
        f"titles). One run per mode, after a warm-up, each on a fresh library. Seconds.\n\n"
        + table(result)
        + f"\nConcurrent load: other processes used {others} of the CPUs during the runs"
        + (f"; {wait}" if wait else "")
        + f". Peak RSS {result['peak_rss_mb']:.0f} MB. Decode = time pulling chunks from "
        "`make_chunks` (PyAV decode and resize); other = file hash and library writes.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--chunk-seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--vlm-tokens", type=int, default=32)
    parser.add_argument("--llm-tokens", type=int, default=48)
    parser.add_argument("--waited", default="", help="a note on waiting for other benchmarks")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    if not args.video.exists():
        from imageio_ffmpeg import get_ffmpeg_exe

        args.video.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                get_ffmpeg_exe(),
                "-y",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=25",
                "-t",
                "600",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                str(args.video),
            ],
            check=True,
        )
    info = probe_video(args.video)
    t0 = time.monotonic()
    file_sha256(args.video)
    hash_s = time.monotonic() - t0

    vlm_count, llm_count = Counter(), Counter()
    with tempfile.TemporaryDirectory() as cache:
        vlm = make_vlm(Path(cache), args.vlm_tokens, vlm_count)
        llm = make_llm(Path(cache), args.llm_tokens, llm_count)
    visual = visual_tokens_per_frame(vlm, (768, 432), 2)
    from PIL import Image

    t0 = time.monotonic()
    warm = [VlmFrame(Image.new("RGB", (768, 432), (90, 120, 150)), 0.0)] * 2
    vlm.answer(warm, "Warm up.", max_new_tokens=2)
    llm.complete("Warm up.", "Say something.", max_new_tokens=2)
    warm_s = time.monotonic() - t0

    modes = {}
    for mode in (summarize_mod.INDEPENDENT, summarize_mod.CONTEXT):
        modes[mode] = run_mode(mode, args.video, info, vlm, llm, vlm_count, llm_count, args)

    result = {
        "date": datetime.date.today().isoformat(),
        "video": str(args.video),
        "video_info": f"{info.width}x{info.height}, {info.duration / 60:.0f} min, H.264"
        if hasattr(info, "width")
        else f"{info.duration / 60:.0f} min",
        "duration_s": info.duration,
        "chunk_seconds": args.chunk_seconds,
        "frames_per_chunk": args.frames,
        "vlm_tokens": args.vlm_tokens,
        "llm_tokens": args.llm_tokens,
        "visual_tokens_per_frame": visual,
        "vlm_params_m": sum(p.numel() for p in vlm.model.parameters()) / 1e6,
        "llm_params_m": sum(p.numel() for p in llm.model.parameters()) / 1e6,
        "file_hash_s": round(hash_s, 2),
        "warm_up_s": round(warm_s, 2),
        "modes": modes,
        "waited_for_other_benchmarks": args.waited,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": {
            "cpus": CPUS,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if not args.no_readme:
        readme = ROOT / "bench" / "README.md"
        if not readme.exists():
            readme = ROOT / "bench" / "README_summary.md"
        with readme.open("a") as f:
            f.write(readme_section(result))
        print(f"appended the table to {readme}")


if __name__ == "__main__":
    main()
