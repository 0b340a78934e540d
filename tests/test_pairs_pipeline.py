"""The image-text path end to end: crawl candidates -> fetch (local HTTP server) -> CLIP scores
with the demo's own filter network -> image dedup -> build-wide CLIP-score cut -> gate -> a
published WebDataset that webdataset reads back."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image, ImageDraw

from curation import layout, storage
from curation.pipeline import (
    load_build_config,
    prepare,
    run_documents_path,
    run_fetch,
    run_gate_step,
    run_ingest,
    run_pairs_path,
    run_publish,
)

pytestmark = pytest.mark.slow
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def _image(index: int) -> bytes:
    """A 96x96 PNG: a coloured shape on a coloured background, distinct per index mod 16."""
    img = Image.new("RGB", (96, 96), COLOURS[index % 8])
    ImageDraw.Draw(img).ellipse((16, 16, 80, 80) if index % 2 else (10, 30, 86, 66), fill=COLOURS[(index // 2 + 3) % 8])
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def image_server():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = _image(int(self.path.strip("/").removesuffix(".png")))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pairs_are_fetched_scored_deduplicated_selected_and_published(build_config, image_server, tmp_path):
    from curation.scoring.image_safety import demo_clip_overrides, train_demo_image_models

    refs = train_demo_image_models(str(tmp_path / "models"), seed=0)
    fetch = {"enabled": True, "allow_private_addresses": True, "min_image_size": 32}
    cfg = build_config(build_id="pairs", ingest={"fetch": fetch}, clip={"cpu_threads": 1, **demo_clip_overrides(refs)["clip"]})
    config_uri, shards = prepare(cfg, "pairs")
    cfg = load_build_config(config_uri)
    ingested = [run_ingest(cfg, "pairs", shard) for shard in shards]
    # The crawl's image URLs name hosts that do not exist here: serve them from 127.0.0.1 instead,
    # 16 distinct images, so pairs beyond the 16th share bytes with an earlier one (exact duplicates).
    for uri in ingested:
        pairs = storage.read_table(layout.pairs_uri(uri))
        local = pa.array([f"{image_server}/{i % 16 + 16 * (n % 1)}.png" for n, i in enumerate(range(pairs.num_rows))])
        storage.write_table(
            layout.pairs_uri(uri), pairs.set_column(pairs.schema.get_field_index("image_url"), "image_url", local)
        )
    fetched = [run_fetch(cfg, "pairs", uri) for uri in ingested]
    assert all(fetched)
    fetched_rows = sum(storage.parquet_rows(u) for u in fetched)
    ok = sum(pc.sum(pc.equal(storage.read_table(u, columns=["status"])["status"], "ok")).as_py() or 0 for u in fetched)
    assert ok == fetched_rows > 16

    selected = run_pairs_path(cfg, "pairs", fetched)
    kept = pa.concat_tables([storage.read_table(u) for u in selected])
    # Exact image duplicates were removed: at most one pair per distinct image survives.
    assert 0 < kept.num_rows <= 16
    assert len(set(kept["pair_id"].to_pylist())) == kept.num_rows
    dedup = storage.read_table(storage.join(cfg.work_root, "pairs", "dedup", "image_duplicates.parquet"))
    assert "dup_image_exact" in set(dedup["reason"].to_pylist())
    # The CLIP-score cut is build-wide: every kept score is at or above the plan's cut.
    plan = storage.read_json(storage.join(cfg.work_root, "pairs", "select_pairs", "plan.json"))
    cut = next(r for r in plan["rules"] if r["column"] == "clip_score")["cut"]
    assert pc.min(kept["clip_score"]).as_py() >= cut

    # Gate and publish documents and pairs together, as a build does.
    docs = run_documents_path(cfg, "pairs", ingested)
    report = run_gate_step(cfg, "pairs", ingested, docs["filtered"], docs["scored"], docs["selected"], pairs=selected)
    assert report.passed, report.failure_message()
    manifest_uri = run_publish(cfg, "pairs", docs["selected"], pairs=selected)
    manifest = storage.read_json(manifest_uri)
    tars = [str(Path(manifest_uri).parent / f["path"]) for f in manifest["pairs"]["files"] if f["path"].endswith(".tar")]
    assert manifest["pairs"]["rows"] == kept.num_rows
    import webdataset as wds

    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("png;jpg", "txt"))
    assert len(samples) == kept.num_rows and all(isinstance(caption, str) and caption for _, caption in samples)
