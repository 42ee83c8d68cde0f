"""Fetching one file: over HTTP (resumable, atomic, checked before it takes its place) or
from the Hugging Face hub.

Usage::

    fetch_url("https://rome.baulab.info/data/dsets/known_1000.json", folder / "known_1000.json",
              check=lambda part: require_sha256(part, "61daca55..."))
    parquet = fetch_hub_file("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet",
                             revision, endpoint=None, cache=folder / "huggingface")
    rows = parquet_column(parquet, "text")

A URL is downloaded into ``.<name>.part`` beside its target.  An interrupted download keeps
that part, and the next attempt asks the server for the rest only (an HTTP ``Range``
request; a server that ignores it sends the whole file again).  The complete part is checked
(``check`` raises ``ValueError``) and only then renamed over the target, so the target is
either absent or whole.  Every failure is a :class:`FetchFailed` whose message is one line.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
from tqdm.auto import tqdm

CHUNK = 1 << 20            # bytes read at a time
USER_AGENT = "romelib (https://rome.baulab.info reference data)"


class FetchFailed(OSError):
    """A file could not be fetched; the message is one line saying why."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """Usage: ``one_line(error)`` -> the first line of ``str(error)`` (or its type), at most ``limit`` characters."""
    if isinstance(error, urllib.error.HTTPError):
        text = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        text = str(error.reason)
    else:
        text = str(error).strip()
    text = (text.splitlines() or [""])[0].strip() or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sha256_of(path: str | Path) -> str:
    """Usage: ``sha256_of("known_1000.json")`` -> the file's SHA-256 as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def require_sha256(path: str | Path, expected: str) -> None:
    """Usage: ``require_sha256(part, "61daca55...")``; raises ``ValueError`` when the file's SHA-256 differs."""
    found = sha256_of(path)
    if found != expected:
        raise ValueError(f"its SHA-256 is {found}, not the expected {expected}")


def fetch_url(url: str, target: str | Path, check: Callable[[Path], None] | None = None,
              progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` through ``.<name>.part``: resumed, checked, then renamed.

    Usage: ``fetch_url(url, cache / "known_1000.json", check=...)`` -> ``target``; raises
    :class:`FetchFailed` (one line) when the server is unreachable, answers an error, closes
    the connection early (the part stays for the next attempt) or sends a file that ``check``
    rejects (the part is deleted; a resumed part gets one fresh download first).
    """
    target = Path(target)
    part = target.with_name(f".{target.name}.part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        resumed = _download(url, part, progress, timeout)
    except (OSError, http.client.HTTPException, ValueError) as error:   # URLError, timeouts, bad URLs
        raise FetchFailed(one_line(error)) from None
    try:
        if check is not None:
            check(part)
    except ValueError as problem:
        part.unlink(missing_ok=True)
        if resumed:            # the first piece may come from an older version of the file
            return fetch_url(url, target, check, progress, timeout)
        raise FetchFailed(f"the file from {url} is not the expected one: {one_line(problem)}") from None
    os.replace(part, target)
    return target


def _download(url: str, part: Path, progress: bool, timeout: float) -> bool:
    """Fill ``part`` with the body of ``url``, continuing what it holds; True when it resumed."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={start}-"} if start else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not start:
            raise
        part.unlink()              # "range not satisfiable": the part is stale, start again
        return _download(url, part, progress, timeout)
    with response:
        if start and getattr(response, "status", None) != 206:
            start = 0              # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = start + int(length) if length else None
        received = start
        with open(part, "ab" if start else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[1:-len(".part")], disable=not progress) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise FetchFailed(f"the connection closed after {received:,} of {total:,} bytes "
                          "(run the download again: it continues where it stopped)")
    return start > 0


class _QuietBar(tqdm):
    """A progress bar that stays hidden (for ``progress=False``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "disable": True})


def fetch_hub_file(repo_id: str, filename: str, revision: str, endpoint: str | None,
                   cache: str | Path, progress: bool = True) -> Path:
    """A file of a Hugging Face dataset repository, through ``huggingface_hub``, into the hub cache ``cache``.

    Usage: ``fetch_hub_file("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet",
    revision, None, folder)``.  One quick request first checks that the hub (``endpoint``,
    else ``$HF_ENDPOINT``) answers, so that an offline machine fails in seconds rather than
    after the client's minute of retries.  Failures are :class:`FetchFailed`.
    """
    url = huggingface_hub.hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision,
                                     endpoint=endpoint)
    try:
        huggingface_hub.get_hf_file_metadata(url, endpoint=endpoint)
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision,
                                                    cache_dir=str(cache), endpoint=endpoint,
                                                    tqdm_class=None if progress else _QuietBar))
    except Exception as error:  # the hub client's errors (network, HTTP, offline mode) all mean "not now"
        raise FetchFailed(f"{url}: {one_line(error)}") from None


def parquet_column(path: str | Path, column: str) -> list:
    """Usage: ``parquet_column(path, "text")`` -> the column's values, in row order (needs pyarrow)."""
    try:
        import pyarrow.parquet as parquet  # here: pyarrow is needed only to convert WikiText
    except ImportError:
        raise FetchFailed("reading the hub's parquet files needs pyarrow (pip install pyarrow)") from None
    try:
        return parquet.read_table(path, columns=[column]).column(column).to_pylist()
    except Exception as error:  # pyarrow's errors for a damaged or foreign file
        raise FetchFailed(f"{Path(path).name} is not a parquet file with a {column!r} column "
                          f"({one_line(error)})") from None
