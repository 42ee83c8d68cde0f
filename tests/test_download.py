"""Reference data on request, tested for real: a local HTTP server plays ROME's site and the
Hugging Face hub, serving copies of the shared data, and romelib downloads from it through
the very code path of a real download, into a private cache, with the shared mirror hidden."""
import hashlib
import io
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import huggingface_hub.constants
import pytest

from romelib.datasets import corpora, counterfact, download, facts

REVISION = download.WIKITEXT_REVISION


@dataclass
class FakeSite:
    """What the server serves: URL path -> bytes, with faults to switch on."""

    files: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)      # URL path -> extra response headers
    cut_after: dict = field(default_factory=dict)    # URL path -> bytes sent before hanging up
    honour_range: bool = True
    requests: list = field(default_factory=list)     # (method, path, Range header)

    def respond(self, handler, send_body: bool) -> None:
        path, wanted = handler.path, handler.headers.get("Range")
        self.requests.append((handler.command, path, wanted))
        if path not in self.files:
            handler.send_error(404)
            return
        data, start = self.files[path], 0
        if wanted and self.honour_range:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        for key, value in self.headers.get(path, {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if send_body:
            handler.wfile.write(data[start:start + self.cut_after.get(path, len(data))])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.site.respond(self, send_body=True)

    def do_HEAD(self):
        self.server.site.respond(self, send_body=False)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    """A real HTTP server on 127.0.0.1; ``site.url`` is its address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.site = FakeSite()
    server.site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.site
    server.shutdown()
    server.server_close()


@pytest.fixture
def rome_site(site, shared_data):
    """ROME's data folder, /dsets/, with known_1000 and the 500-record sample as counterfact.json."""
    site.files["/dsets/known_1000.json"] = (shared_data / "known" / "known_1000.json").read_bytes()
    site.files["/dsets/counterfact.json"] = (shared_data / "counterfact" / "counterfact_500.json").read_bytes()
    site.base_url = site.url + "/dsets/"
    return site


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A private cache, the shared mirror hidden, no mirror or hub from the environment."""
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(tmp_path / "no-mirror"))
    monkeypatch.delenv("ROMELIB_DATA_MIRROR", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return tmp_path / "cache" / "data"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_one_line_naming_the_command(error, name):
    message = str(error.value)
    assert "\n" not in message and f'"python -m romelib.datasets.download {name}"' in message, message
    assert isinstance(error.value, FileNotFoundError) and error.value.__cause__ is None


def test_known_1000_and_counterfact_are_downloaded_checked_and_found(rome_site, private_cache):
    found = download.download(["known_1000", "counterfact"], base_url=rome_site.base_url,
                              counterfact_records=500, progress=False)
    known, full = private_cache / "known_1000.json", private_cache / "counterfact.json"
    assert found == {"known_1000": [known], "counterfact": [full]}
    assert known.read_bytes() == rome_site.files["/dsets/known_1000.json"]
    assert sha256(known.read_bytes()) == download.FILES["known_1000.json"].sha256
    assert full.read_bytes() == rome_site.files["/dsets/counterfact.json"]
    entries = json.loads((private_cache / "manifest.json").read_text())
    assert entries["counterfact.json"]["sha256"] == sha256(full.read_bytes())
    assert entries["counterfact.json"]["records"] == 500
    assert entries["known_1000.json"]["source"] == rome_site.base_url + "known_1000.json"
    assert not list(private_cache.glob(".*.part"))
    # The readers find them in the cache (the mirror is hidden), and nothing is fetched again.
    served = len(rome_site.requests)
    assert len(facts.load_facts("known_1000")) == 1209
    assert facts.known_1000_path() == known
    assert len(counterfact.load_counterfact("full")) == 500
    assert counterfact.counterfact_path("full") == full
    assert download.download(["known_1000"], base_url=rome_site.base_url) == {"known_1000": [known]}
    assert len(rome_site.requests) == served
    # The 500-record sample ("shared") has no download: it is missing, said in one line.
    with pytest.raises(download.ReferenceDataMissing, match="ROMELIB_SHARED_DATA") as error:
        counterfact.load_counterfact("shared")
    assert "\n" not in str(error.value)
    assert counterfact.counterfact_path("auto") == counterfact.project_cases_path()


def test_the_command_line_downloads_and_fails_in_one_line(rome_site, private_cache, capsys):
    assert download.main(["known_1000", "--mirror", rome_site.base_url, "--quiet"]) == 0
    assert f"known_1000: {private_cache / 'known_1000.json'}" in capsys.readouterr().out
    del rome_site.files["/dsets/known_1000.json"]
    assert download.main(["counterfact", "known_1000", "--mirror", closed_port_url(), "--force"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2, errors          # one line for each set that failed, nothing else
    assert '"python -m romelib.datasets.download counterfact"' in errors[0]
    assert '"python -m romelib.datasets.download known_1000"' in errors[1]
    assert (private_cache / "known_1000.json").exists()     # a failed --force keeps the good copy


def test_counterfact_is_checked_by_its_contents(rome_site, private_cache):
    with pytest.raises(download.ReferenceDataMissing, match="holds 500 records, not 21,919"):
        download.download(["counterfact"], base_url=rome_site.base_url, progress=False)
    records = json.loads(rome_site.files["/dsets/counterfact.json"])
    records[3] = {**records[3], "case_id": records[2]["case_id"]}
    rome_site.files["/dsets/counterfact.json"] = json.dumps(records).encode()
    with pytest.raises(download.ReferenceDataMissing, match="not unique"):
        download.download(["counterfact"], base_url=rome_site.base_url, counterfact_records=500, progress=False)
    assert not (private_cache / "counterfact.json").exists()
    assert not list(private_cache.glob(".*.part"))


def test_a_wrong_checksum_is_refused(rome_site, private_cache):
    rome_site.files["/dsets/known_1000.json"] += b" "
    with pytest.raises(download.ReferenceDataMissing, match="SHA-256") as error:
        download.download(["known_1000"], base_url=rome_site.base_url, progress=False)
    assert_one_line_naming_the_command(error, "known_1000")
    assert not (private_cache / "known_1000.json").exists() and not list(private_cache.glob(".*.part"))


def test_a_damaged_cached_file_is_fetched_again(rome_site, private_cache, monkeypatch, caplog):
    download.download(["known_1000", "counterfact"], base_url=rome_site.base_url,
                      counterfact_records=500, progress=False)
    for name in ("known_1000.json", "counterfact.json"):
        with open(private_cache / name, "r+b") as handle:
            handle.seek(1000)
            handle.write(b"#")
    with pytest.raises(download.ReferenceDataMissing, match="known_1000"):
        facts.known_1000_path(download=False)
    # A reader fetches it again, from the mirror named in the environment, with a warning.
    monkeypatch.setenv("ROMELIB_DATA_MIRROR", rome_site.base_url)
    served = len(rome_site.requests)
    assert len(facts.load_facts("known_1000")) == 1209
    assert "damaged" in caplog.text and len(rome_site.requests) == served + 1
    # CounterFact's damage is seen through the checksum its manifest recorded.
    caplog.clear()
    download.download(["counterfact"], counterfact_records=500, progress=False)
    assert "damaged" in caplog.text and "counterfact.json" in caplog.text
    assert (private_cache / "counterfact.json").read_bytes() == rome_site.files["/dsets/counterfact.json"]


def test_a_missing_file_or_an_unreachable_server_says_what_to_run(rome_site, private_cache, monkeypatch):
    del rome_site.files["/dsets/known_1000.json"]
    with pytest.raises(download.ReferenceDataMissing, match="HTTP 404") as error:
        download.download(["known_1000"], base_url=rome_site.base_url, progress=False)
    assert_one_line_naming_the_command(error, "known_1000")
    assert str(private_cache) in str(error.value)
    monkeypatch.setenv("ROMELIB_DATA_MIRROR", closed_port_url())
    with pytest.raises(download.ReferenceDataMissing) as error:
        facts.load_facts("known_1000")
    assert_one_line_naming_the_command(error, "known_1000")
    assert "known_1000.json in" in str(error.value)


def test_an_interrupted_download_leaves_no_file_and_resumes(rome_site, private_cache):
    path, data = "/dsets/counterfact.json", rome_site.files["/dsets/counterfact.json"]
    rome_site.cut_after[path] = 300_000
    with pytest.raises(download.ReferenceDataMissing, match="closed after 300,000 of"):
        download.download(["counterfact"], base_url=rome_site.base_url, counterfact_records=500, progress=False)
    assert not (private_cache / "counterfact.json").exists()
    assert (private_cache / ".counterfact.json.part").stat().st_size == 300_000
    del rome_site.cut_after[path]
    download.download(["counterfact"], base_url=rome_site.base_url, counterfact_records=500)
    assert rome_site.requests[-1] == ("GET", path, "bytes=300000-")
    assert (private_cache / "counterfact.json").read_bytes() == data
    assert not (private_cache / ".counterfact.json.part").exists()
    # A server that ignores the Range request sends the whole file, which is used as it is.
    rome_site.cut_after["/dsets/known_1000.json"] = 1000
    with pytest.raises(download.ReferenceDataMissing):
        download.download(["known_1000"], base_url=rome_site.base_url, progress=False)
    del rome_site.cut_after["/dsets/known_1000.json"]
    rome_site.honour_range = False
    download.download(["known_1000"], base_url=rome_site.base_url, progress=False)
    assert sha256((private_cache / "known_1000.json").read_bytes()) == download.FILES["known_1000.json"].sha256
    # A part left by another version of the file fails the check once resumed: fetched afresh.
    rome_site.honour_range = True
    (private_cache / ".known_1000.json.part").write_bytes(b"[" * 5000)
    served = len(rome_site.requests)
    download.download(["known_1000"], base_url=rome_site.base_url, force=True, progress=False)
    assert [wanted for *_, wanted in rome_site.requests[served:]] == ["bytes=5000-", None]
    assert sha256((private_cache / "known_1000.json").read_bytes()) == download.FILES["known_1000.json"].sha256


# WikiText-2 through huggingface_hub, from parquet files built here from the mirror's raw text.

def hub_rows(raw: str) -> list[str]:
    """The hub's rows of a raw WikiText file, as the ``datasets`` WikiText script made them."""
    return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]


def parquet_bytes(rows: list[str]) -> bytes:
    import pyarrow
    import pyarrow.parquet
    buffer = io.BytesIO()
    pyarrow.parquet.write_table(pyarrow.table({"text": rows}), buffer)
    return buffer.getvalue()


def hub_path(raw_name: str) -> str:
    return f"/datasets/{download.WIKITEXT_REPO}/resolve/{REVISION}/{download.WIKITEXT_PARQUET[raw_name]}"


@pytest.fixture
def hub_site(site, shared_data, monkeypatch):
    """The hub's resolve endpoint for Salesforce/wikitext's two parquet files."""
    pytest.importorskip("pyarrow.parquet")
    for raw_name in download.WIKITEXT_PARQUET:
        data = parquet_bytes(hub_rows((shared_data / "text" / raw_name).read_text(encoding="utf-8")))
        site.files[hub_path(raw_name)] = data
        site.headers[hub_path(raw_name)] = {"X-Repo-Commit": REVISION, "ETag": f'"{sha256(data)}"'}
    monkeypatch.setenv("HF_ENDPOINT", site.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return site


def test_wikitext_rows_give_back_the_raw_files(shared_data):
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        raw = (shared_data / "text" / name).read_text(encoding="utf-8")
        rows = hub_rows(raw)
        assert len(rows) == download.FILES[name].records
        assert download.raw_wikitext(rows) == raw


def test_wikitext_is_downloaded_from_the_hub_and_found(hub_site, shared_data, private_cache):
    found = download.download(["wikitext-2"], progress=False)
    assert found == {"wikitext-2": [private_cache / "wiki.valid.raw", private_cache / "wiki.test.raw"]}
    for path in found["wikitext-2"]:
        assert path.read_bytes() == (shared_data / "text" / path.name).read_bytes()
    entries = json.loads((private_cache / "manifest.json").read_text())
    assert entries["wiki.test.raw"]["records"] == 4358
    assert entries["wiki.valid.raw"]["source"].startswith(f"hf://datasets/Salesforce/wikitext@{REVISION}/")
    assert {method for method, *_ in hub_site.requests} == {"HEAD", "GET"}
    # The readers find them in the cache.
    assert corpora.wikitext_files() == found["wikitext-2"]
    assert next(iter(corpora.text_source("wikitext-2").documents())).startswith("Homarus gammarus")
    assert len(corpora.wikitext_paragraphs()) > 1000


def test_wikitext_with_wrong_rows_or_no_hub_fails_in_one_line(hub_site, shared_data, private_cache, monkeypatch):
    rows = hub_rows((shared_data / "text" / "wiki.test.raw").read_text(encoding="utf-8"))
    hub_site.files[hub_path("wiki.test.raw")] = data = parquet_bytes(rows[:-1])
    hub_site.headers[hub_path("wiki.test.raw")]["ETag"] = f'"{sha256(data)}"'
    with pytest.raises(download.ReferenceDataMissing, match="has 4,357 rows, not 4,358"):
        download.download(["wikitext-2"], progress=False)
    assert (private_cache / "wiki.valid.raw").exists() and not (private_cache / "wiki.test.raw").exists()
    assert not [p for p in private_cache.iterdir() if p.name.startswith(".hub-")]
    hub_site.files[hub_path("wiki.test.raw")] = data = parquet_bytes(rows)      # repaired: the next run
    hub_site.headers[hub_path("wiki.test.raw")]["ETag"] = f'"{sha256(data)}"'    # fetches that file only
    served = len(hub_site.requests)
    download.download(["wikitext-2"], progress=False)
    assert {path for _, path, _ in hub_site.requests[served:]} == {hub_path("wiki.test.raw")}
    assert download.raw_wikitext(rows) == (private_cache / "wiki.test.raw").read_text(encoding="utf-8")
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        (private_cache / name).unlink()
    del hub_site.files[hub_path("wiki.valid.raw")]
    with pytest.raises(download.ReferenceDataMissing) as error:
        download.download(["wikitext-2"], progress=False)
    assert_one_line_naming_the_command(error, "wikitext-2")
    assert corpora.wikitext_paragraphs() == []
    with pytest.raises(corpora.SourceUnavailable, match="wikitext-2 is not on this machine"):
        corpora.text_source("wikitext-2")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url().rstrip("/"))
    with pytest.raises(download.ReferenceDataMissing) as error:
        download.download(["wikitext-2"], progress=False)
    assert_one_line_naming_the_command(error, "wikitext-2")
    assert not (private_cache / "wiki.valid.raw").exists()
