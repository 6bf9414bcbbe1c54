"""Adding images and videos to the library: scan, plan (skip, rename, reuse, embed), embed, write.

The pipeline overlaps work: loader threads read, check, decode and preprocess the next images (or
the next video frames) while the model embeds the current batch. Each batch is written in one
transaction, so a run stopped at any point (Ctrl-C, a closed browser tab, kill -9) resumes where it
stopped; a video stopped half-way keeps its frames and continues from the last one.

Modules:
    files    folders scanned, the files taken (hidden and system files skipped), upload names
    indexer  the Indexer: plans each file (skip, rename, copy, embed), records failures, reports
    images   images embedded in batches while loader threads prepare the next ones
    videos   videos sampled in a thread while their frames are embedded, resumable per frame
    links    web links: fetched once (core.fetch), indexed with their title and link; playlists
"""

from __future__ import annotations

from core.indexing.files import INDEXABLE, Candidate, scan_folder, upload_name
from core.indexing.indexer import Indexer, index_report_lines
from core.indexing.links import link_step_text
from core.indexing.videos import FRAME_IMAGE_SIZE

__all__ = [
    "FRAME_IMAGE_SIZE",
    "INDEXABLE",
    "Candidate",
    "Indexer",
    "index_report_lines",
    "link_step_text",
    "scan_folder",
    "upload_name",
]
