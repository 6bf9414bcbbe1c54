"""Framescope: understand images and video with vision-language models."""

__version__ = "0.1.0"
