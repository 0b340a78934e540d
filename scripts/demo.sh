#!/usr/bin/env bash
# Install if needed, then run the weekly corpus build end to end under Airflow on this machine:
# a generated sample crawl -> ingest -> dedup -> filter -> score -> select, its image-text pairs ->
# CLIP filter network -> image dedup -> select, then gate -> publish, all under ./var/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

root=$(pwd)
var="$root/var"
rm -rf "$var"  # the demo starts from scratch each time: its crawl, Airflow home and releases
mkdir -p "$var"
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
export AIRFLOW_HOME="$var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$root/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=2
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export CURATION_CONFIG="$var/demo.yaml"

echo "== training the demo's own models from seed data: fastText quality + toxicity, CLIP filter network + safety head" >&2
scoring=$(.venv/bin/curation train-demo-classifiers "$var/models" --seed 0)
clip=$(.venv/bin/curation train-demo-image-models "$var/models" --seed 0)

cat > "$CURATION_CONFIG" <<YAML
inputs: ["$var/crawl/*.warc.gz"]
work_root: $var/work
release_root: $var/releases
state_root: $var/state
gate:
  documents_suite: $root/expectations/documents.json
ingest:
  # No network here: the images of the image-text pairs come from the crawl's own image records.
  # DataComp drops images under 200 px; the sample crawl's are 64 or 256 px.
  fetch: {enabled: true, source: warc, min_image_size: 128}
$scoring
$clip
select:
  rules:
    - {column: toxicity_score, keep: below, threshold: 0.4, reason: toxicity}
    - {column: pii_count, keep: below, threshold: 5, reason: pii}
    # A small demo corpus: keep what the quality model calls good rather than DCLM's top 10%.
    - {column: quality_score, keep: above, threshold: 0.5, reason: quality}
YAML

echo "== sample crawl" >&2
.venv/bin/curation sample-crawl "$var/crawl" --pages 1000 --files 4 --seed 0 >/dev/null
echo "== airflow metadata db ($AIRFLOW_HOME)" >&2
.venv/bin/airflow db migrate >"$var/airflow-migrate.log" 2>&1
echo "== airflow dags test corpus_build (log: $var/demo-build.log)" >&2
if ! .venv/bin/airflow dags test corpus_build >"$var/demo-build.log" 2>&1; then
  tail -40 "$var/demo-build.log" >&2
  echo "demo build failed; full log: $var/demo-build.log" >&2
  exit 1
fi
grep -E "DagRun Finished" "$var/demo-build.log" | sed 's/.*\(state=[a-z]*\).*/run \1/' >&2
echo "== release" >&2
.venv/bin/curation release --config "$CURATION_CONFIG" --verify
latest=$(cat "$var/releases/web-en/LATEST")
echo "release path: $var/releases/web-en/$latest"
