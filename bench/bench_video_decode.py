"""Video decode strategies for time sampling, on long-GOP 720p H.264, and memory on 10 vs 60 min.

What is measured, in one run, with core.media.FrameSampler (threaded PyAV decoding, frames
converted to RGB at 448 px by FFmpeg) at 1 frame per second of video:

  sequential  decode every frame; convert the first frame at or after each target.
  nonref      skip non-reference frames everywhere (codec_context.skip_frame = "NONREF"); a
              frame can then be a few frames late.
  seek        seek to the keyframe before every target, then decode up to it.
  auto        the default: skip non-reference frames that come before the next target, and
              seek when the keyframe before the next target is at least 2 s ahead.

For each: frames delivered per second (wall clock), minutes of wall-clock decoding per hour of
video, CPU seconds, frames the decoder output, and how far the delivered frames are from their
targets. `seek` re-decodes a whole GOP half per target, so by default it only runs over the
first --seek-minutes of the video (the rates are per video second, so they compare). A sparse
run (a frame every 67 s, which no GOP boundary lines up with) shows when seeking pays. Then `auto` runs over the 60-minute video:
its peak RSS must stay within 10% of the 10-minute run's (memory does not grow with length).

The test videos (not committed) are made with the imageio-ffmpeg binary: a 2-minute 1280x720
25 fps clip of testsrc2 with temporal noise (so frames differ like camera footage), x264
veryfast with B-frames and a fixed 300-frame (12 s) GOP, then joined with the concat demuxer
and -c copy into 10 and 60 minutes. Each measurement runs in its own process (peak RSS is the
child's ru_maxrss). Wait for other benchmarks to finish first: they share the 2 cores.

Run:  .venv/bin/python bench/bench_video_decode.py [--workdir DIR] [--seek-minutes 3]
Writes bench/results/video_decode.json and prints a Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
STRATEGIES = ("sequential", "nonref", "seek", "auto")
DEFAULT = "auto"
PIECE_S = 120
GOP = 300
FPS = 25


# -- test videos ---------------------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run([*cmd, *args], check=True)


def make_videos(work: Path) -> dict[str, Path]:
    """The 10- and 60-minute videos in `work`, made once (kept when --workdir is given)."""
    work.mkdir(parents=True, exist_ok=True)
    piece = work / "piece_2min.mp4"
    videos = {"10min": work / "long_gop_10min.mp4", "60min": work / "long_gop_60min.mp4"}
    if not piece.exists():
        print(f"encoding a {PIECE_S} s 1280x720 long-GOP clip (x264 veryfast) ...", flush=True)
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate={FPS}",
            "-vf",
            "noise=alls=6:allf=t",
            "-t",
            str(PIECE_S),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            str(GOP),
            "-keyint_min",
            str(GOP),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-an",
            str(piece),
        )
    for name, copies in (("10min", 5), ("60min", 30)):
        if videos[name].exists():
            continue
        listing = work / f"concat_{name}.txt"
        listing.write_text("ffconcat version 1.0\n" + f"file '{piece.name}'\n" * copies)
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(videos[name]))
    return videos


# -- one measurement, in its own process ---------------------------------------------------------


def run_stage(video: Path, strategy: str, every: float, limit_s: float | None) -> dict:
    from core import media
    from core.media.sampling import _Clock

    info = media.probe_video(video, media.VideoLimits())
    decoded = 0
    clock = _Clock.__call__

    def counting(self, frame):  # counts the frames the decoder outputs
        nonlocal decoded
        decoded += 1
        return clock(self, frame)

    _Clock.__call__ = counting
    sampler = media.FrameSampler(info, every=every, strategy=strategy)
    lags = []
    delivered = 0
    last = 0.0
    cpu0, wall0 = os.times(), time.perf_counter()
    for k, frame in enumerate(sampler):
        lags.append(frame.timestamp - k * sampler.interval)
        delivered += 1
        last = frame.timestamp
        assert frame.image.size[0] == 448
        if limit_s is not None and (k + 1) * sampler.interval >= limit_s:
            break  # before any work on the next target
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    # the video decoded: up to the limit, or up to the last sample (the rest is never read)
    covered = limit_s if limit_s is not None else last
    return {
        "strategy": strategy,
        "video": video.name,
        "video_s": round(info.duration, 1),
        "measured_video_s": round(covered, 1),
        "every_s": every,
        "frames_delivered": delivered,
        "last_timestamp": round(last, 3),
        "frames_decoded": decoded,
        "wall_s": round(wall, 2),
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 2),
        "frames_per_s": round(delivered / wall, 2),
        "decode_min_per_video_hour": round(wall / covered * 3600 / 60, 2),
        "max_lag_frames": round(max(lags) * info.fps, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "truncated": sampler.truncated,
    }


def _subprocess_stage(video: Path, strategy: str, every: float, limit_s: float | None) -> dict:
    cmd = [sys.executable, __file__, "--stage", strategy, "--video", str(video)]
    cmd += ["--every", str(every)]
    if limit_s is not None:
        cmd += ["--limit", str(limit_s)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def _other_benchmarks() -> list[str]:
    """Command lines of other benchmark processes (they would share the 2 cores)."""
    try:
        out = subprocess.run(
            ["pgrep", "-af", "bench/bench_"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return []
    mine = {str(os.getpid()), str(os.getppid())}
    return [
        line
        for line in out.splitlines()
        if line.split()[0] not in mine and "bench_video_decode" not in line
    ]


# -- report --------------------------------------------------------------------------------------


def markdown(runs: list[dict], rss: dict) -> str:
    head = (
        "| run | strategy | video measured | frames/s delivered | wall min per video hour"
        " | CPU min per video hour | frames decoded | max lag (frames) | peak RSS MB |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for r in runs:
        rows.append(
            f"| {r['label']} | {r['strategy']} | {r['measured_video_s'] / 60:.0f} of"
            f" {r['video_s'] / 60:.0f} min | {r['frames_per_s']:.1f} |"
            f" {r['decode_min_per_video_hour']:.1f} | {r['cpu_s'] / r['measured_video_s'] * 60:.1f} |"
            f" {r['frames_decoded']} |"
            f" {r['max_lag_frames']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    tail = (
        f"\nPeak RSS of `{DEFAULT}`: {rss['10min_mb']:.0f} MB on 10 min, {rss['60min_mb']:.0f} MB"
        f" on 60 min ({rss['change_pct']:+.1f}%, limit ±10%: {'ok' if rss['flat'] else 'FAILED'})."
    )
    return head + "\n".join(rows) + "\n" + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep the generated videos here for reuse")
    parser.add_argument("--seek-minutes", type=float, default=3.0, help="0: the whole video")
    parser.add_argument("--stage", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child process: one measurement, a JSON line on stdout
        print(json.dumps(run_stage(args.video, args.stage, args.every, args.limit)))
        return

    while others := _other_benchmarks():
        print(f"waiting for other benchmarks to finish: {others[0]}", flush=True)
        time.sleep(30)

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before: {' '.join(load_before)} (figures need a quiet machine)")
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="framescope-video-bench-")
    work = args.workdir or Path(tmp)
    try:
        videos = make_videos(work)
        seek_limit = args.seek_minutes * 60 if args.seek_minutes > 0 else None
        plan = [("1 fps", videos["10min"], s, 1.0, None) for s in STRATEGIES if s != "seek"]
        plan.insert(2, ("1 fps", videos["10min"], "seek", 1.0, seek_limit))
        plan += [
            ("1 fps", videos["60min"], DEFAULT, 1.0, None),
            ("every 67 s", videos["10min"], "sequential", 67.0, None),
            ("every 67 s", videos["10min"], DEFAULT, 67.0, None),
        ]
        runs = []
        for label, video, strategy, every, limit in plan:
            res = _subprocess_stage(video, strategy, every, limit)
            res["label"] = label
            runs.append(res)
            print(
                f"  {label:10s} {video.name:22s} {strategy:10s} {res['frames_per_s']:7.1f} frames/s"
                f"  {res['decode_min_per_video_hour']:6.1f} min/h  {res['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    ten = next(r for r in runs if r["label"] == "1 fps" and r["strategy"] == DEFAULT)
    sixty = next(r for r in runs if r["video"] == videos["60min"].name)
    change = (sixty["peak_rss_mb"] - ten["peak_rss_mb"]) / ten["peak_rss_mb"] * 100
    rss = {
        "10min_mb": ten["peak_rss_mb"],
        "60min_mb": sixty["peak_rss_mb"],
        "change_pct": round(change, 1),
        "flat": abs(change) <= 10,
    }
    table = markdown(runs, rss)
    print("\n" + table)
    import av

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "video_decode",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pyav": av.__version__,
            "load_average_before": load_before,
            "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
        },
        "videos": {
            "content": "testsrc2 1280x720 25 fps + temporal noise, x264 veryfast, B-frames",
            "gop_frames": GOP,
            "piece_s": PIECE_S,
            "made_by": "2-minute clip joined with the concat demuxer (-c copy)",
        },
        "default_strategy": DEFAULT,
        "runs": runs,
        "rss_10_vs_60_min": rss,
        "markdown": table,
    }
    (RESULTS / "video_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'video_decode.json'}")


if __name__ == "__main__":
    main()
