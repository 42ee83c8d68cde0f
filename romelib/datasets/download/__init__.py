"""Reference data on request: where each reference file is, and fetching the missing ones.

Usage::

    python -m romelib.datasets.download                         # known_1000, counterfact, wikitext-2
    python -m romelib.datasets.download known_1000 --mirror http://host/dsets/

    from romelib.datasets.download import download, reference_path
    download(["known_1000", "counterfact", "wikitext-2"])      # {"known_1000": [Path], ...}
    reference_path("known_1000.json")                          # the one answer to "where is it?"

Every reader of reference data asks :func:`reference_path`, which looks in this order:

1. the shared mirror, ``romelib.paths.shared_data_dir()`` (``$ROMELIB_SHARED_DATA``, else
   ``../shared/data``), e.g. ``known/known_1000.json``, read as it is;
2. romelib's cache, ``romelib.paths.cache_dir() / "data"``, checked against the file's
   SHA-256 (a damaged copy is fetched again, with a warning);
3. a download into the cache, from the original location:

* **known_1000** (ROME's 1,209 known facts): ``https://rome.baulab.info/data/dsets/``
  (``base_url``, ``--mirror``, ``$ROMELIB_DATA_MIRROR``), checked against its SHA-256.
* **counterfact** (the full set, 21,919 records): the same site.  Its checksum cannot be
  known in advance, so the download is checked structurally (a JSON list of that many
  records, each passing ``validate_record``, unique case_ids) and its SHA-256 is then
  written to ``manifest.json`` beside it, so that later loads detect damage.
* **wikitext-2** (raw validation + test): the parquet files of the Hugging Face dataset
  ``Salesforce/wikitext`` (config ``wikitext-2-raw-v1``, pinned revision; ``$HF_ENDPOINT``
  or ``hf_endpoint`` for another hub), turned back into ``wiki.valid.raw`` and
  ``wiki.test.raw``, one line per row.  The hub's rows are the raw files' lines as the
  ``datasets`` WikiText script read them (a line with text whole, newline included; a
  blank line, always " \n" in WikiText, as ""), so the rebuilt files are byte-identical
  to the originals: their row counts (3,760 and 4,358) and SHA-256 are checked.

The 500-record CounterFact sample (``counterfact_500.json``, source ``"shared"``) has no
public download: it is found in the mirror or the cache only.  A file that is nowhere and
cannot be downloaded raises :class:`ReferenceDataMissing`, whose message is one line saying
what to run and where to put the file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ...paths import cache_dir, shared_data_dir
from ...results import locked, read_json, write_bytes, write_json
from ..counterfact_schema import validate_records
from ..fetch import FetchFailed, fetch_hub_file, fetch_url, parquet_column, require_sha256, sha256_of

log = logging.getLogger(__name__)

ROME_DATA_URL = "https://rome.baulab.info/data/dsets/"
WIKITEXT_REPO = "Salesforce/wikitext"
WIKITEXT_REVISION = "b08601e04326c79dfdd32d625aee71d232d685c3"   # the hub's parquet conversion
WIKITEXT_PARQUET = {"wiki.valid.raw": "wikitext-2-raw-v1/validation-00000-of-00001.parquet",
                    "wiki.test.raw": "wikitext-2-raw-v1/test-00000-of-00001.parquet"}
COUNTERFACT_RECORDS = 21919


@dataclass(frozen=True)
class ReferenceFile:
    """One reference file: its name, its data set, its folder in the mirror, what it must be."""

    name: str                   # the file's name, in the cache folder and in the mirror
    dataset: str                # what download() and the command line call its set
    shared_folder: str          # its folder in the shared mirror
    sha256: str | None = None   # None: not known in advance (recorded in the manifest)
    size: int | None = None     # bytes
    records: int | None = None  # records or lines


FILES = {file.name: file for file in (
    ReferenceFile("known_1000.json", "known_1000", "known", size=343229, records=1209,
                  sha256="61daca55318bb5260c1e62e133debef9102c7b278bbc7b19dd2ac655543f333a"),
    ReferenceFile("counterfact.json", "counterfact", "counterfact", records=COUNTERFACT_RECORDS),
    ReferenceFile("counterfact_500.json", "counterfact_500", "counterfact", size=1023024, records=500,
                  sha256="99a455fe1b99dc332ec1fa921e69fd9297606e9c51d4f108522782f6ad125803"),
    ReferenceFile("wiki.valid.raw", "wikitext-2", "text", size=1146846, records=3760,
                  sha256="4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7"),
    ReferenceFile("wiki.test.raw", "wikitext-2", "text", size=1290590, records=4358,
                  sha256="173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"),
)}
DOWNLOADABLE = ("known_1000", "counterfact", "wikitext-2")


class ReferenceDataMissing(FileNotFoundError):
    """A reference file is in neither the mirror nor the cache and could not be downloaded;
    ``str(error)`` is one line saying what to run and where to put the file."""


def data_folder() -> Path:
    """Usage: ``data_folder()`` -> ``cache_dir() / "data"``, where downloaded reference files go."""
    return cache_dir() / "data"


def manifest() -> dict:
    """Usage: ``manifest()["counterfact.json"]["sha256"]``: what was downloaded into the cache, and its checksums."""
    try:
        return read_json(data_folder() / "manifest.json", {})
    except ValueError as error:      # damaged: a cached CounterFact is then read unchecked
        log.warning("%s is damaged (%s); ignoring it.", data_folder() / "manifest.json", error)
        return {}


def missing_message(dataset: str, reason: str | None = None) -> str:
    """The one line :class:`ReferenceDataMissing` says: what to run, where to put the files.

    Usage: ``missing_message("known_1000", "HTTP 404 Not Found")``.
    """
    files = [f for f in FILES.values() if f.dataset == dataset]
    names = " and ".join(f.name for f in files)
    places = f"{data_folder()}/ or {shared_data_dir() / files[0].shared_folder}/"
    if dataset in DOWNLOADABLE:
        text = (f'{dataset} is not on this machine: run "python -m romelib.datasets.download {dataset}" '
                f"where the internet is reachable, or put {names} in {places}")
    else:
        text = (f"{dataset} is not on this machine and has no public download: put {names} in {places} "
                f"(set ROMELIB_SHARED_DATA to the mirror that holds it), or use CounterFact's full set, "
                f'source "full" ("python -m romelib.datasets.download counterfact"), or source "project"')
    return f"{text} ({reason})" if reason else text


def _intact_cached_copy(file: ReferenceFile, warn: bool = True) -> Path | None:
    """The cached copy of ``file`` when its checksum is right (or unknown); None when absent or damaged."""
    path = data_folder() / file.name
    if not path.is_file():
        return None
    expected = file.sha256 or manifest().get(file.name, {}).get("sha256")
    if expected is not None and sha256_of(path) != expected:
        if warn:
            log.warning("%s is damaged (its SHA-256 is not the recorded %s); it will be downloaded again.",
                        path, expected)
        return None
    return path


def _find(file: ReferenceFile) -> Path | None:
    shared = shared_data_dir() / file.shared_folder / file.name
    return shared if shared.is_file() else _intact_cached_copy(file)


def reference_path(name: str, download: bool = True) -> Path:
    """Where reference file ``name`` is: the shared mirror, else the cache (checked), else downloaded now.

    Usage: ``json.loads(reference_path("known_1000.json").read_text())``; ``download=False``
    never uses the network.  Raises :class:`ReferenceDataMissing` (one line) when it is nowhere.
    """
    if name not in FILES:
        raise ValueError(f"Unknown reference file {name!r}; known: {', '.join(FILES)}.")
    file = FILES[name]
    found = _find(file)
    if found is not None:
        return found
    if not download or file.dataset not in DOWNLOADABLE:
        raise ReferenceDataMissing(missing_message(file.dataset))
    return _fetch(file.dataset, {})[_dataset_files(file.dataset).index(name)]


def _dataset_files(dataset: str) -> list[str]:
    return [f.name for f in FILES.values() if f.dataset == dataset]


def download(names=DOWNLOADABLE, base_url: str | None = None, hf_endpoint: str | None = None,
             force: bool = False, progress: bool = True,
             counterfact_records: int = COUNTERFACT_RECORDS) -> dict[str, list[Path]]:
    """Make reference data sets available: those in the mirror or intact in the cache are kept, the others fetched.

    Usage: ``download(["known_1000", "counterfact", "wikitext-2"])`` -> ``{name: [paths]}``;
    ``base_url`` replaces ``https://rome.baulab.info/data/dsets/`` (also ``$ROMELIB_DATA_MIRROR``),
    ``hf_endpoint`` the Hugging Face hub (also ``$HF_ENDPOINT``); ``force=True`` downloads
    again into the cache; ``counterfact_records`` is the number of records CounterFact's
    file must hold.  Raises :class:`ReferenceDataMissing` (one line) on failure.
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = sorted(set(names) - set(DOWNLOADABLE))
    if unknown:
        raise ValueError(f"Unknown data set(s) {unknown}; choose from {', '.join(DOWNLOADABLE)}.")
    options = dict(base_url=base_url, hf_endpoint=hf_endpoint, progress=progress,
                   counterfact_records=counterfact_records)
    found = {}
    for name in names:
        paths = [] if force else [_find(FILES[f]) for f in _dataset_files(name)]
        found[name] = paths if paths and all(paths) else _fetch(name, options, force)
    return found


def _fetch(dataset: str, options: dict, force: bool = False) -> list[Path]:
    """Download the files of ``dataset`` that the cache lacks (one process at a time), each
    recorded in the manifest as soon as it is in place."""
    folder = data_folder()
    folder.mkdir(parents=True, exist_ok=True)
    fetch_one = _fetch_wikitext_file if dataset == "wikitext-2" else _fetch_rome_file
    with locked(folder / f".{dataset}"):                # .known_1000.lock
        for name in _dataset_files(dataset):
            if not force and _intact_cached_copy(FILES[name], warn=False):   # done before, or meanwhile
                continue
            try:
                entry = fetch_one(FILES[name], folder, options)
            except FetchFailed as failure:
                raise ReferenceDataMissing(missing_message(dataset, str(failure))) from None
            with locked(folder / ".manifest"):
                write_json(folder / "manifest.json", {**manifest(), name: entry})
    return [folder / name for name in _dataset_files(dataset)]


def _entry(path: Path, source: str, records: int) -> dict:
    return {"sha256": sha256_of(path), "bytes": path.stat().st_size, "records": records, "source": source,
            "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _fetch_rome_file(file: ReferenceFile, folder: Path, options: dict) -> dict:
    """known_1000.json or counterfact.json from ROME's site (or a mirror of it); its manifest entry."""
    base = options.get("base_url") or os.environ.get("ROMELIB_DATA_MIRROR") or ROME_DATA_URL
    url = base.rstrip("/") + "/" + file.name
    records = options.get("counterfact_records", file.records) if file.dataset == "counterfact" else file.records

    def check(part: Path) -> None:
        if file.sha256 is not None:
            require_sha256(part, file.sha256)
        else:          # CounterFact: no checksum to compare with, so check its contents
            content = validate_records(json.loads(part.read_text(encoding="utf-8")), where=file.name)
            if len(content) != records:
                raise ValueError(f"it holds {len(content):,} records, not {records:,}")
    log.info("Downloading %s from %s", file.name, url)
    path = fetch_url(url, folder / file.name, check=check, progress=options.get("progress", True))
    return _entry(path, url, records)


def raw_wikitext(rows: list[str]) -> str:
    """WikiText's raw file from the hub's rows: one line per row, a blank row the raw " " line.

    Usage: ``raw_wikitext(["", " = Valkyria = \\n"])`` -> ``" \\n = Valkyria = \\n"``.  The
    hub's rows are the raw lines as the ``datasets`` WikiText script read them: a line with
    text kept whole (its newline included), a blank line (always " \\n" in WikiText) as "".
    """
    return "".join(row if row.endswith("\n") else (row or " ") + "\n" for row in rows)


def _fetch_wikitext_file(file: ReferenceFile, folder: Path, options: dict) -> dict:
    """wiki.valid.raw or wiki.test.raw from the hub's parquet file, checked, written atomically.

    The parquet file (0.7 MB) goes to a temporary hub cache, deleted once converted.
    """
    endpoint = options.get("hf_endpoint") or os.environ.get("HF_ENDPOINT") or None
    parquet_name = WIKITEXT_PARQUET[file.name]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".hub-") as hub_cache:
        parquet = fetch_hub_file(WIKITEXT_REPO, parquet_name, WIKITEXT_REVISION, endpoint, hub_cache,
                                 progress=options.get("progress", True))
        rows = parquet_column(parquet, "text")
    if len(rows) != file.records:
        raise FetchFailed(f"{parquet_name} has {len(rows):,} rows, not {file.records:,}")
    data = raw_wikitext(rows).encode("utf-8")
    found = hashlib.sha256(data).hexdigest()
    if found != file.sha256:
        raise FetchFailed(f"{parquet_name} gives a {file.name} of {len(data):,} bytes with SHA-256 {found}, "
                          f"not the original's {file.size:,} bytes with SHA-256 {file.sha256}")
    write_bytes(folder / file.name, data)
    return _entry(folder / file.name, f"hf://datasets/{WIKITEXT_REPO}@{WIKITEXT_REVISION}/{parquet_name}", len(rows))


def main(argv=None) -> int:
    """``python -m romelib.datasets.download [known_1000 counterfact wikitext-2] [--mirror URL]``."""
    parser = argparse.ArgumentParser(
        prog="python -m romelib.datasets.download",
        description=f"Fetch ROME's reference data into {data_folder()} (the shared mirror "
                    f"{shared_data_dir()} is used first when it holds a file).")
    parser.add_argument("names", nargs="*", default=list(DOWNLOADABLE), metavar="NAME",
                        help=f"data sets to fetch: {', '.join(DOWNLOADABLE)} (default: all)")
    parser.add_argument("--mirror", default=None,
                        help=f"base URL of known_1000.json and counterfact.json (default {ROME_DATA_URL}, "
                             "or $ROMELIB_DATA_MIRROR)")
    parser.add_argument("--hf-endpoint", default=None, help="Hugging Face hub URL (default $HF_ENDPOINT)")
    parser.add_argument("--force", action="store_true", help="download again into the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(DOWNLOADABLE))
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; choose from {', '.join(DOWNLOADABLE)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    failed = 0
    for name in args.names:           # each set on its own: one failure does not stop the others
        try:
            found = download([name], base_url=args.mirror, hf_endpoint=args.hf_endpoint,
                             force=args.force, progress=not args.quiet)[name]
        except ReferenceDataMissing as missing:
            print(missing, file=sys.stderr)
            failed += 1
            continue
        for path in found:
            print(f"{name}: {path}")
    return 1 if failed else 0
