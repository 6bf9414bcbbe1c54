"""Video question answering: frame selection, the per-video frame cache, the chat loop, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_media, tiny_settings

from core.errors import QueryError
from core.qa import (
    FRAMES,
    QUESTION,
    UNIFORM,
    CandidateFrames,
    FrameCache,
    ask,
    decode_candidates,
    select_frames,
)


class RecordingVlm:
    """Stands in for the model to test the code around it: records what it was given."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def answer(self, frames, question, history=(), *, max_new_tokens=128, system=None):
        self.calls.append(
            {"frames": frames, "question": question, "history": list(history), "system": system}
        )
        return f"answer {len(self.calls)}"


@pytest.fixture(scope="module")
def videos():
    return require_media("video")


def _candidates(n: int, dim: int = 8) -> CandidateFrames:
    from PIL import Image

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return CandidateFrames([float(i) for i in range(n)], [Image.new("RGB", (8, 8))] * n, vectors)


def test_uniform_selection_spreads_over_the_video():
    frames = _candidates(64)
    assert select_frames(frames, 8) == [0, 9, 18, 27, 36, 45, 54, 63]
    assert select_frames(frames, 100) == list(range(64))
    assert select_frames(frames, 1) == [0]


def test_question_aware_selection_keeps_the_planted_frame_and_coverage():
    frames = _candidates(64)
    planted = 37
    question = frames.vectors[planted].copy()
    picked = select_frames(frames, 8, question)
    assert planted in picked and picked == sorted(picked) and len(picked) == 8
    assert picked[0] <= 9 and picked[-1] >= 54  # coverage of the whole video remains


def test_question_aware_selection_with_real_clip(embedder, videos, settings):
    frames = decode_candidates(videos / "vtest.avi", embedder, settings, count=16)
    question = "a photo of a red apple"
    frames.vectors[5] = embedder.embed_texts([question])[
        0
    ]  # plant a frame that matches the question
    picked = select_frames(frames, 4, embedder.embed_texts([question])[0])
    assert 5 in picked


def test_follow_up_question_does_not_decode_again(embedder, videos, tmp_path):
    settings = tiny_settings(tmp_path)
    cache = FrameCache()
    first = cache.get(videos / "realshort.mp4", embedder, settings)
    again = cache.get(videos / "realshort.mp4", embedder, settings)
    assert first is again and cache.decodes == 1
    assert all(t is not None for t in first.timestamps) and len(first.images) == len(first.vectors)


def test_ask_sends_frames_question_and_bounded_history(embedder):
    frames = _candidates(20, dim=embedder.dim)
    vlm = RecordingVlm()
    history = []
    for i in range(6):
        history.append(
            ask(vlm, embedder, frames, f"question {i}?", history, n_frames=4, selection=UNIFORM)
        )
    last = vlm.calls[-1]
    assert len(last["frames"]) == 4 and [f.timestamp for f in last["frames"]] == [
        0.0,
        6.0,
        13.0,
        19.0,
    ]
    assert len(last["history"]) == 6  # the last three exchanges only
    assert last["history"][-1].text == "answer 5" and last["history"][-2].text == "question 4?"
    assert (
        history[-1].text == "answer 6"
        and len(history[-1].frames) == 4
        and history[-1].frames[0].jpeg[:2] == b"\xff\xd8"
    )
    with pytest.raises(QueryError, match="empty question"):
        ask(vlm, embedder, frames, "   ", history)
    assert ask(vlm, embedder, frames, "which frame?", (), n_frames=3, selection=QUESTION).frames


def _run_cli(args, home, **kwargs):
    env = {
        **os.environ,
        "FRAMESCOPE_HOME": str(home),
        "FRAMESCOPE_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "FRAMESCOPE_VLM_MAX_TOKENS": "8",
    }
    exe = shutil.which("framescope", path=os.path.dirname(sys.executable)) or "framescope"
    return subprocess.run(
        [exe, *args], env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def test_cli_ask_once_and_interactively(tmp_path, videos):
    once = _run_cli(
        ["ask", str(videos / "vtest.avi"), "-q", "What is happening?", "--frames", "3", "--json"],
        tmp_path,
    )
    assert once.returncode == 0, once.stderr
    data = json.loads(once.stdout)
    assert data["question"] == "What is happening?" and isinstance(data["answer"], str)
    assert len(data["frames"]) == 3 and all(f["timestamp"] is not None for f in data["frames"])
    chat = _run_cli(
        ["ask", str(videos / "vtest.avi"), "--frames", "2"],
        tmp_path,
        input="Is it day?\n\nAre people visible?\nexit\n",
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("Question> ") == 4 and chat.stdout.count("(frames at ") == 2
    missing = _run_cli(["ask", str(tmp_path / "nope.mp4"), "-q", "hi"], tmp_path)
    assert (
        missing.returncode == 1
        and "no such file" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_module_cache_is_shared():
    assert isinstance(FRAMES, FrameCache)
