"""fetch_images against a real HTTP server on 127.0.0.1 serving good, broken, oversized, slow and redirecting images."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from curation import layout
from curation.cli import app
from curation.ingest.fetch import fetch_images, is_public_address
from curation.schema import PAIRS
from tests.images import png_claiming


def _image(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


GOOD_PNG = _image("PNG", (300, 240))
GOOD_JPG = _image("JPEG", (400, 300))
ASSETS = {
    "/good.png": ("image/png", GOOD_PNG),
    "/good.jpg": ("image/jpeg", GOOD_JPG),
    "/small.png": ("image/png", _image("PNG", (64, 64))),
    "/wide.png": ("image/png", _image("PNG", (900, 200))),
    "/broken.png": ("image/png", GOOD_PNG[: len(GOOD_PNG) // 3]),
    "/not-an-image.png": ("image/png", b"<html><body>Sorry, this is a web page</body></html>"),
    "/bomb.png": ("image/png", png_claiming(100_000, 100_000)),
    "/huge.png": ("image/png", GOOD_PNG + b"\x00" * 3_000_000),
}


class _Server:
    """Request log and per-path state shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter = Counter()
        self.starts: list[tuple[str, float]] = []
        self.inflight = 0
        self.max_inflight = 0


class _Handler(BaseHTTPRequestHandler):
    state: _Server

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "image/png", headers: dict | None = None, length=True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        state = self.state
        with state.lock:
            state.hits[path] += 1
            hits = state.hits[path]
            state.starts.append((path, time.monotonic()))
        if path in ASSETS:
            ctype, body = ASSETS[path]
            self._send(200, body, ctype)
        elif path == "/huge-stream.png":  # no Content-Length: the cap must hold while streaming
            self._send(200, GOOD_PNG + b"\x00" * 3_000_000, length=False)
        elif path == "/slow.png":
            time.sleep(3)
            self._send(200, GOOD_PNG)
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, headers={"Location": f"/redirect/{n - 1}" if n > 1 else "/good.jpg"})
        elif path == "/loop":
            self._send(301, headers={"Location": "/loop"})
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/passwd"})
        elif path == "/flaky.png":
            self._send(503, b"busy") if hits <= 1 else self._send(200, GOOD_PNG)
        elif path == "/always-503":
            self._send(503, b"busy")
        elif path.startswith("/conc/"):
            with state.lock:
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
            time.sleep(0.15)
            with state.lock:
                state.inflight -= 1
            self._send(200, GOOD_PNG)
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture
def server():
    state = _Server()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", state
    httpd.shutdown()
    httpd.server_close()


def _pairs(tmp_path: Path, urls: list[str], name: str = "pairs") -> str:
    n = len(urls)
    given = {
        "pair_id": [f"p{i}" for i in range(n)],
        "doc_id": [f"d{i}" for i in range(n)],
        "page_url": ["https://www.example.com/page"] * n,
        "image_url": urls,
        "caption": ["a caption of several words"] * n,
    }
    table = pa.Table.from_arrays(
        [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type) for f in PAIRS], schema=PAIRS
    )
    uri = str(tmp_path / "ingest" / "pairs" / f"{name}.parquet")
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, uri)
    return uri


def _fetch_cfg(build_config, **fetch):
    base = {
        "allow_private_addresses": True,
        "timeout_s": 1.0,
        "connect_timeout_s": 1.0,
        "retries": 2,
        "backoff_s": 0.01,
        "per_host_rate": 1000,
        "per_host_concurrency": 8,
        "max_bytes": 1_000_000,
        "max_pixels": 50_000_000,
    }
    return build_config(ingest={"fetch": {**base, **fetch}})


def test_fetcher_statuses_for_good_broken_oversized_slow_and_redirecting_images(tmp_path, build_config, server):
    base, state = server
    cases = {
        "/good.png": "ok",
        "/good.jpg": "ok",
        "/redirect/2": "ok",
        "/flaky.png": "ok",
        "/small.png": "too_small",
        "/wide.png": "bad_aspect",
        "/broken.png": "decode_error",
        "/not-an-image.png": "decode_error",
        "/bomb.png": "too_many_pixels",
        "/huge.png": "too_large",
        "/huge-stream.png": "too_large",
        "/slow.png": "timeout",
        "/loop": "too_many_redirects",
        "/to-file": "bad_url",
        "/gone": "http_error",
        "/always-503": "http_error",
    }
    urls = [base + path for path in cases] + [base + "/good.png", "ftp://example.com/x.png"]
    pairs = _pairs(tmp_path, urls)
    out = str(tmp_path / "fetch" / "00000.parquet")
    stats = fetch_images([pairs], out, _fetch_cfg(build_config, retries=1, timeout_s=1.0))
    rows = pq.read_table(out).to_pylist()
    assert [r["image_url"] for r in rows] == urls  # every row, in order, with its status
    got = {r["image_url"].removeprefix(base): r["status"] for r in rows}
    assert got == {**cases, "ftp://example.com/x.png": "bad_url"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["error"] is None and r["image"] for r in ok)
    assert all(r["error"] and r["image"] is None for r in rows if r["status"] != "ok")
    good = next(r for r in rows if r["image_url"] == base + "/good.png")
    assert good["image_sha256"] == hashlib.sha256(GOOD_PNG).hexdigest() and good["image"] == GOOD_PNG
    assert (good["image_format"], good["image_width"], good["image_height"]) == ("PNG", 300, 240)
    redirected = next(r for r in rows if r["image_url"].endswith("/redirect/2"))
    assert redirected["image"] == GOOD_JPG and redirected["attempts"] == 3  # two redirects, then the image
    assert next(r for r in rows if r["image_url"].endswith("/flaky.png"))["attempts"] == 2  # retries=1: 503, then ok
    # Retries: 5xx retried (1 + retries requests), 404 not; the same URL is fetched once however many rows name it.
    assert state.hits["/always-503"] == 2 and state.hits["/gone"] == 1 and state.hits["/good.png"] == 1
    assert state.hits["/loop"] == 4  # the first request and max_redirects=3 more
    # Stats: rows in = ok + failures by status; a report with the success rate; failures in dropped/.
    assert stats.rows_in == len(urls) and stats.rows_out == 5 and stats.balanced()
    assert stats.dropped["decode_error"] == 2 and stats.dropped["http_error"] == 2
    report = json.loads(Path(layout.fetch_report_uri(out)).read_text())
    assert report["success_rate"] == round(5 / len(urls), 4) and report["by_status"]["ok"] == 5
    assert report["bytes_downloaded"] >= len(GOOD_PNG) * 2 + len(GOOD_JPG) * 2
    dropped = pq.read_table(layout.dropped_uri(out)).to_pylist()
    assert len(dropped) == len(urls) - 5 and {d["reason"] for d in dropped} == set(cases.values()) - {"ok"}


def test_private_addresses_are_refused_unless_allowed(tmp_path, build_config, server):
    base, state = server
    port = base.rsplit(":", 1)[1]
    urls = [base + "/good.png", f"http://localhost:{port}/good.png", "http://[::1]/x.png", "http://169.254.169.254/latest/"]
    out = str(tmp_path / "fetch" / "00000.parquet")
    stats = fetch_images([_pairs(tmp_path, urls)], out, _fetch_cfg(build_config, allow_private_addresses=False))
    assert pq.read_table(out)["status"].to_pylist() == ["refused_address"] * 4
    assert stats.rows_out == 0 and sum(state.hits.values()) == 0  # nothing reached the server
    assert not is_public_address("10.1.2.3") and not is_public_address("::ffff:127.0.0.1") and is_public_address("8.8.8.8")


def test_per_host_concurrency_and_rate_limits(tmp_path, build_config, server):
    base, state = server
    out = str(tmp_path / "fetch" / "a.parquet")
    urls = [f"{base}/conc/{i}.png" for i in range(8)]
    fetch_images([_pairs(tmp_path, urls, "a")], out, _fetch_cfg(build_config, concurrency=16, per_host_concurrency=2))
    assert state.max_inflight == 2
    state.starts.clear()
    urls = [f"{base}/good.png?n={i}" for i in range(6)]
    out = str(tmp_path / "fetch" / "b.parquet")
    fetch_images([_pairs(tmp_path, urls, "b")], out, _fetch_cfg(build_config, per_host_rate=20))
    starts = sorted(t for _, t in state.starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and min(gaps) > 0.04  # 20 requests/s: one every 50 ms


def test_resize_and_the_cli(tmp_path, build_config, server):
    base, _ = server
    pairs = _pairs(tmp_path, [base + "/good.jpg", base + "/good.png"])
    out = str(tmp_path / "fetch" / "00000.parquet")
    fetch_images([pairs], out, _fetch_cfg(build_config, resize_max_side=200, resize_format="webp"))
    jpg, png = pq.read_table(out).to_pylist()
    assert (jpg["image_width"], jpg["image_height"], jpg["original_width"], jpg["original_height"]) == (200, 150, 400, 300)
    assert jpg["image_format"] == "WEBP" and Image.open(io.BytesIO(jpg["image"])).size == (200, 150)
    assert jpg["image_sha256"] == hashlib.sha256(GOOD_JPG).hexdigest()  # of the downloaded bytes
    assert png["image_width"] == 200 and png["original_width"] == 300

    cli_out = str(tmp_path / "cli" / "00000.parquet")
    result = CliRunner().invoke(app, ["fetch-images", pairs, "-o", cli_out, "--set", "ingest.fetch.allow_private_addresses=true"])
    assert result.exit_code == 0, result.output
    assert "success rate 1.0" in result.output and Path(layout.stats_uri(cli_out)).exists()
