"""The layout stays what the README says: packages name their API, modules stay small, the library
does not pull in the video decoder, and one Job carries progress and stop requests."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from core.jobs import Job, Step

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "core.cli",
    "core.fetch",
    "core.indexing",
    "core.library",
    "core.media",
    "core.models",
    "core.search",
    "core.zeroshot",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_names_its_api(name):
    package = importlib.import_module(name)
    assert package.__doc__ and "\n" in package.__doc__.strip(), f"{name} has no module list"
    assert package.__all__, f"{name} declares no __all__"
    for item in package.__all__:
        assert hasattr(package, item), f"{name}.__all__ names {item}, which it lacks"


def test_modules_and_classes_stay_small():
    too_long = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 650:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno > 340:
                too_long.append(f"{path.relative_to(ROOT)}: class {node.name}")
    assert too_long == []


def test_callers_use_public_names():
    """Pages, the app and ui/ import what packages export, never a private name of a module."""
    private = []
    for path in [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def test_the_library_does_not_import_the_video_decoder():
    code = "import sys, core.library; print('av' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_a_job_reports_in_stages_and_stops():
    steps: list[Step] = []
    asked = []
    job = Job(steps.append, should_stop=lambda: asked.append(1) or len(steps) >= 2)
    job.report(1, 4, "one")
    assert not job.stopped
    job.stage("describe").report(2, 4, "two")
    assert [(s.stage, s.done, s.fraction) for s in steps] == [("", 1, 0.25), ("describe", 2, 0.5)]
    assert job.stage("describe").stopped and job.stopped  # a stage stops with its job
    other = Job()
    other.stage("download").stop()
    assert other.stopped
    assert Step(3, None, "bytes").fraction is None
