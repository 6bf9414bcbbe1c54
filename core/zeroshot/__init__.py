"""Moved here from core/zeroshot.py; the package API is declared in the next commit."""

from core.zeroshot.classify import *  # noqa: F403
