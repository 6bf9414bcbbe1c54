"""Download one video from a web link with yt-dlp, without letting the link reach private networks.

Modules:
- video: FetchedVideo, what fetch_video returns.
- urls: the fetch settings (_options), the checks of links and addresses (check_url), and
  link_scheme (does a text start like a link, and with which scheme).
- guard: the per-fetch guard and yt-dlp's only request handler, which connects through it.
- ytdlp: fetch_video and the yt-dlp driver (only native downloaders, FFmpeg on local files only).
- playlists: list_link_items, the videos of a playlist or channel link (flat, nothing downloaded).
- subtitles: parse_vtt and the choice of subtitle language.
- cache: the download index, <home>/downloads/index.json.

`fetch_video(url, settings)` downloads a single video (the best format up to a height cap), keeps
its title, uploader, duration, chapters and subtitles, checks the file with `probe_video`, and
remembers it in `<home>/downloads/index.json` so the same link is not downloaded twice.

Server-side request forgery (SSRF) protection
---------------------------------------------
A link typed by a user must not make this machine fetch from itself, its private network or the
cloud metadata service. `check_url` refuses anything but plain http(s) links to hosts whose every
address is public. That alone would not be enough: yt-dlp follows redirects, reads URLs out of
pages and manifests, and resolves host names again when it connects (a DNS answer can change in
between: "DNS rebinding"). So yt-dlp is given exactly one network request handler, `_GuardedRH`,
and no other (no proxies, no file:, data:, ftp: or websocket URLs). Its connection step resolves the
host, checks every address it got, and connects to one of those very addresses (the check and the
connection use the same answer, so nothing can change in between). Redirects are checked as they
come, and are checked again when their connection is opened. Downloads must use yt-dlp's native
downloaders (which send every request through that handler); FFmpeg is used only to merge and fix
local files, with its network protocols turned off, and only after the files were sniffed to be
media (not a playlist or a script that could make FFmpeg open other files or URLs).
"""

from __future__ import annotations

from core.fetch.playlists import list_link_items
from core.fetch.subtitles import parse_vtt
from core.fetch.urls import check_url, link_scheme, normalize_link
from core.fetch.video import FetchedVideo
from core.fetch.ytdlp import fetch_video

__all__ = [
    "FetchedVideo",
    "check_url",
    "fetch_video",
    "link_scheme",
    "list_link_items",
    "normalize_link",
    "parse_vtt",
]
