"""The image-text path end to end: crawl candidates -> fetch (local HTTP server) -> CLIP scores
with the demo's own filter network -> image dedup -> build-wide CLIP-score cut -> gate -> a
published WebDataset that webdataset reads back."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
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


def test_offline_demo_pairs_from_the_crawl_are_ranked_by_the_trained_filter_network(build_config, sample_crawl, tmp_path):
    """The demo's path: images from the crawl's own records, scored by the filter network the demo
    trains from seed data. The crawl's alt texts are labelled (manifest): the network must rank the
    ones that describe their picture above the others, and the selection must keep mostly those."""
    import json

    from curation.pipeline import pairs_funnel, run_build
    from curation.release import verify_release
    from curation.scoring.evaluation import roc_auc_split
    from curation.scoring.image_safety import demo_clip_overrides, train_demo_image_models

    refs = train_demo_image_models(str(tmp_path / "models"), seed=0)
    fetch = {"enabled": True, "source": "warc", "min_image_size": 64}  # keep the crawl's 64 px images too
    cfg = build_config(
        build_id="demo-pairs", ingest={"fetch": fetch}, clip={"cpu_threads": 1, **demo_clip_overrides(refs)["clip"]}
    )
    summary = run_build(cfg)

    manifest = json.loads((Path(sample_crawl[0]).parent / "crawl-manifest.json").read_text())
    truth = {(r["url"], i["url"]): i for r in manifest["records"] if r["kind"] == "images" for i in r["images"]}
    scored = pa.concat_tables([storage.read_table(u) for u in layout.stage_outputs(cfg, "demo-pairs", "clip")])
    labels = [truth[key] for key in zip(scored["page_url"].to_pylist(), scored["image_url"].to_pylist(), strict=True)]
    clip = scored["clip_score"].to_numpy()
    matched = np.array([i["caption"] == "matched" for i in labels])
    assert matched.sum() >= 10 and (~matched).sum() >= 10
    auc = roc_auc_split(clip[matched], clip[~matched])
    print(f"filter network on the crawl's pairs: AUC matched vs other alt texts {auc:.3f} over {len(clip)} pairs")
    assert auc >= 0.9
    striped = np.array([i["striped"] for i in labels])
    if striped.any():  # the stand-in safety head sees the stand-in unsafe pattern
        nsfw = scored["nsfw_score"].to_numpy()
        assert roc_auc_split(nsfw[striped], nsfw[~striped]) >= 0.9

    kept = pa.concat_tables([storage.read_table(u) for u in summary["pairs"]])
    kept_labels = [truth[key]["caption"] for key in zip(kept["page_url"].to_pylist(), kept["image_url"].to_pylist(), strict=True)]
    assert kept.num_rows >= 5 and kept_labels.count("matched") >= 0.9 * kept.num_rows

    # The image-text chain has its own balanced funnel, in the gate report and the release.
    chain = {s.stage: s for s in pairs_funnel(cfg, "demo-pairs", layout.stage_outputs(cfg, "demo-pairs", "ingest"))}
    assert list(chain) == ["ingest_pairs", "fetch_images", "clip", "pairs_dedup", "select_pairs"]
    assert all(s.balanced() for s in chain.values()) and chain["select_pairs"].rows_out == kept.num_rows
    release = verify_release(cfg, "demo-pairs")
    assert release["pairs"]["rows"] == kept.num_rows and release["funnel"]["select_pairs"]["rows_out"] == kept.num_rows
    report = storage.read_json(summary["gate_report"])
    assert any(c["name"] == "select_pairs: rows balance (in = out + dropped)" and c["success"] for c in report["checks"])
