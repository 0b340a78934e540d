"""
### Train the filter models

Trains the models `corpus_build` scores with and publishes them, with their checksums, under
`{models_root}/{version}/`:

* `quality.bin`, `toxicity.bin`: fastText classifiers (DCLM-style preprocessing, bigrams),
  trained from labelled JSONL/Parquet seed data (`text` column) given as URIs, or from the
  project's generated seed data when none is given;
* `filter_network.pt` (+ `nsfw_head.pt`): a small DFN-style CLIP filter network, and the
  stand-in image-safety head on its embeddings.

Each artifact gets `.sha256` and `.eval.json` (held-out precision/recall/ROC AUC) beside it, and
`models.yaml` holds the config overrides (URIs + sha256) that make `corpus_build` use them. The
asset `models/filters` gets an event whose extra names that file, so builds can follow it.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, get_current_context, task

MODELS_ASSET = Asset("models/filters")


@dag(
    dag_id="train_filters",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["curation", "models"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 1, "execution_timeout": dt.timedelta(hours=4)},
    params={
        "models_root": Param("var/models", type="string", title="Models root", description="local folder or s3:// prefix"),
        "quality_positives": Param([], type="array", items={"type": "string"}, title="Quality: positive examples (URIs)"),
        "quality_negatives": Param([], type="array", items={"type": "string"}, title="Quality: negative examples (URIs)"),
        "toxicity_positives": Param([], type="array", items={"type": "string"}, title="Toxicity: toxic examples (URIs)"),
        "toxicity_negatives": Param([], type="array", items={"type": "string"}, title="Toxicity: clean examples (URIs)"),
        "seed": Param(0, type="integer", minimum=0, title="Seed"),
    },
)
def train_filters():
    @task
    def version() -> str:
        run = get_current_context()["dag_run"]
        return run.run_after.strftime("%Y%m%dT%H%M%SZ")

    @task
    def text_classifiers(version: str) -> dict:
        from curation import storage
        from curation.scoring.fasttext_classifier import demo_scoring_overrides, train_classifier, train_demo_models

        params = get_current_context()["params"]
        out = storage.join(params["models_root"], version)
        if not (params["quality_positives"] and params["quality_negatives"]):
            return demo_scoring_overrides(train_demo_models(out, seed=params["seed"]))
        refs = {}
        for task_name, label in (("quality", "quality"), ("toxicity", "toxic")):
            if params[f"{task_name}_positives"] and params[f"{task_name}_negatives"]:
                trained = train_classifier(
                    params[f"{task_name}_positives"],
                    params[f"{task_name}_negatives"],
                    storage.join(out, f"{task_name}.bin"),
                    label,
                )
                refs[task_name] = trained.model
        return demo_scoring_overrides(refs)

    @task
    def image_models(version: str) -> dict:
        from curation import storage
        from curation.scoring.image_safety import demo_clip_overrides, train_demo_image_models

        params = get_current_context()["params"]
        refs = train_demo_image_models(storage.join(params["models_root"], version), seed=params["seed"])
        return demo_clip_overrides(refs)

    @task(outlets=[MODELS_ASSET])
    def publish_models(version: str, text: dict, image: dict) -> str:
        import yaml

        from curation import storage

        params = get_current_context()["params"]
        uri = storage.join(params["models_root"], version, "models.yaml")
        storage.write_bytes(uri, yaml.safe_dump({**text, **image}, sort_keys=True).encode())
        get_current_context()["outlet_events"][MODELS_ASSET].extra = {"models": uri, "version": version}
        return uri

    v = version()
    publish_models(v, text_classifiers(v), image_models(v))


train_filters()
