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


def test_ctrl_c_while_answering_stops_that_answer_and_the_session_goes_on(capsys):
    from core.cli.video import _chat

    class Result:
        def __init__(self, question):
            self.text, self.frames = f"answer to {question}", ()

    questions = iter(["first?", "second?", "exit"])
    asked = []

    def answer(question, history):
        asked.append((question, len(history)))
        if len(asked) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the model is answering
        return Result(question)

    assert _chat(answer, read=lambda prompt: next(questions)) == 0
    out = capsys.readouterr().out
    assert asked == [("first?", 0), ("second?", 0)]  # a stopped answer is not in the history
    assert "(answer stopped)" in out and "answer to second?" in out
    assert out.index("(answer stopped)") < out.index("answer to second?")


class _Reader:
    """Collects a subprocess's output (a pipe) in a thread; `wait_for` waits for a text."""

    def __init__(self, stream):
        import threading

        self.text = ""
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while chunk := os.read(self._stream.fileno(), 4096):
            self.text += chunk.decode("utf-8", "replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 300) -> None:
        import time

        end = time.monotonic() + timeout
        while self.text.count(needle) < count:
            assert time.monotonic() < end, f"no {needle!r} (x{count}) in {self.text[-2000:]!r}"
            time.sleep(0.05)


@pytest.mark.skip(
    reason="timing: SIGINT 1 s after the question may land before or after the tiny model "
    "answers on a loaded machine (failed once in a loaded CI run); the loop is tested in-process"
)
def test_cli_ask_ctrl_c_while_answering_returns_to_the_prompt(tmp_path, videos):
    import signal
    import time

    env = {
        **os.environ,
        "FRAMESCOPE_HOME": str(tmp_path),
        "FRAMESCOPE_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "FRAMESCOPE_VLM_MAX_TOKENS": "64",
    }
    exe = shutil.which("framescope", path=os.path.dirname(sys.executable)) or "framescope"
    # 64 frames make the tiny VLM's answer take seconds: long enough to interrupt it.
    proc = subprocess.Popen(
        [exe, "ask", str(videos / "vtest.avi"), "--frames", "64"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    try:
        out.wait_for("Question> ")
        proc.stdin.write(b"What is happening?\n")
        proc.stdin.flush()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out.wait_for("(answer stopped)")
        out.wait_for("Question> ", 2)
        assert proc.poll() is None, err.text  # the session goes on
        proc.stdin.write(b"Is it day?\n")
        proc.stdin.flush()
        out.wait_for("(frames at ")
        out.wait_for("Question> ", 3)
        proc.stdin.write(b"exit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err._thread.join(timeout=10)
    assert "Traceback" not in err.text and "KeyboardInterrupt" not in err.text
    assert out.text.count("(frames at ") == 1  # only the second question was answered
