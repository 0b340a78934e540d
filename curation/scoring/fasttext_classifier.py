"""fastText classifiers: train from labelled texts, evaluate on a held-out split, score by ModelRef.

Training follows DCLM (Li et al. 2024) and Ultra-FineWeb: text lower-cased, punctuation removed,
whitespace collapsed, word bigrams (`wordNgrams=2`). `train_classifier` writes three artifacts
next to each other, the model last but one and the report last, so a reader that finds the
report finds a complete set:

    MODEL.bin          the fastText model
    MODEL.sha256       "<sha256>  MODEL.bin" (put the hash in the config's ModelRef)
    MODEL.eval.json    precision, recall and ROC AUC on the held-out split, sizes, parameters

Scoring loads a model by `ModelRef` (local path, s3:// or hf-hub:, sha256 checked on load) once
per process and predicts a whole batch per call (fastText's multi-line predict). The score of a
text is the probability of the configured label. Public checkpoints use the same path:

- DCLM's quality classifier: `hf-hub:mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin`,
  label `__label__hq`, preprocess `newlines` (DCLM scores raw text with newlines turned into spaces).
- Dolma's Jigsaw taggers (`jigsaw_hatespeech_document_v2`, `jigsaw_nsfw_document_v1`), published at
  https://dolma-artifacts.org/fasttext_models/jigsaw_fasttext_bigrams_20230515/jigsaw_fasttext_bigrams_hatespeech_final.bin
  and .../jigsaw_fasttext_bigrams_nsfw_final.bin, labels `__label__toxic` / `__label__non-toxic` and
  `__label__nsfw` / `__label__non-nsfw`, preprocess `newlines`. ModelRef reads local, s3:// and
  hf-hub: URIs, so copy the files once into the model bucket (s3://BUCKET/models/...) and pin
  their sha256 in the config.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from curation import storage
from curation.config import FastTextModelConfig
from curation.errors import BadInputError, ConfigError
from curation.models import ModelRef, resolve, sha256_file
from curation.scoring.evaluation import roc_auc

log = logging.getLogger(__name__)

PREDICT_BATCH = 4096


def label_names(label: str) -> tuple[str, str]:
    """fastText labels of a model trained for `label`: (positive, negative)."""
    return f"__label__{label}", f"__label__not_{label}"


# --- preprocessing ----------------------------------------------------------------------------


_NON_ASCII_PUNCTUATION = r"[^\x00-\x7F\p{L}\p{N}\p{M}]+"  # e.g. curly quotes, dashes, NBSP
_SPACE = ord(" ")
# One byte table for the ASCII range: A-Z -> a-z, a-z and 0-9 stay, every other ASCII byte
# (punctuation, symbols, whitespace, control characters) -> space; bytes >= 0x80 stay (UTF-8).
_ASCII_TABLE = bytes(
    b + 32 if 65 <= b <= 90 else b if (97 <= b <= 122 or 48 <= b <= 57 or b >= 0x80) else _SPACE for b in range(256)
)


def _string_buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, UTF-8 bytes) of a string array without nulls, rebased to start at 0."""
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def _fix_non_ascii_rows(text: pa.Array) -> pa.Array:
    """Rows with non-ASCII bytes: Unicode lower-casing, non-ASCII punctuation / symbols / spaces -> space.

    Only those rows go through the Unicode kernels; ASCII is handled by the byte table afterwards.
    """
    offsets, data = _string_buffers(text)
    high = data >= 0x80
    if not high.any():
        return text
    nonempty = np.diff(offsets) > 0
    row_high = np.zeros(len(text), bool)
    row_high[nonempty] = np.logical_or.reduceat(high, offsets[:-1][nonempty])
    rows = np.flatnonzero(row_high)
    fixed = pc.replace_substring_regex(pc.utf8_lower(text.take(pa.array(rows))), _NON_ASCII_PUNCTUATION, " ")
    index = np.arange(len(text))
    index[rows] = len(text) + np.arange(len(rows))
    return pa.concat_arrays([text, fixed]).take(pa.array(index))


def normalize_text(text: pa.Array | pa.ChunkedArray, collapse: bool = True) -> pa.Array:
    """DCLM / Ultra-FineWeb preprocessing: lower-case, punctuation -> space, whitespace collapsed and trimmed.

    Letters, digits and combining marks stay; everything else becomes a space. Columnar: Unicode
    kernels only on rows with non-ASCII bytes, then one byte-table pass over the whole UTF-8
    buffer (a regex that matches at every space costs more than the fastText prediction itself).
    `collapse=False` leaves runs of spaces: fastText splits on any run of whitespace, so it reads
    the same tokens from either form, and scoring skips the collapsing work.
    """
    text = text.fill_null("").cast(pa.string())
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    text = _fix_non_ascii_rows(text)
    offsets, data = _string_buffers(text)
    mapped = data.tobytes().translate(_ASCII_TABLE)
    offsets32 = offsets.astype(np.int32)
    if not collapse:
        return pa.StringArray.from_buffers(len(text), pa.py_buffer(offsets32), pa.py_buffer(mapped))
    # Drop a space that follows a space or starts its string, then shift the offsets to match.
    space = np.frombuffer(mapped, np.uint8) == _SPACE
    drop = space.copy()
    drop[1:] &= space[:-1]
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    first = offsets[:-1][nonempty]  # strictly increasing: each segment runs to the next one's start
    drop[first] = space[first]
    dropped = np.zeros(len(lengths), np.int64)
    dropped[nonempty] = np.add.reduceat(drop, first, dtype=np.int64)
    new_offsets = np.concatenate([[0], np.cumsum(lengths - dropped)]).astype(np.int32)
    kept = np.frombuffer(mapped, np.uint8)[~drop].tobytes()
    out = pa.StringArray.from_buffers(len(text), pa.py_buffer(new_offsets), pa.py_buffer(kept))
    return pc.utf8_rtrim(out, characters=" ")  # a run of spaces at the end leaves its first one


def newlines_to_spaces(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """What DCLM and Dolma do before predicting: fastText reads one line, so line breaks become spaces."""
    return pc.replace_substring_regex(text.fill_null(""), r"[\n\r\v\f]", " ")


def prepare(text: pa.Array | pa.ChunkedArray, preprocess: str) -> pa.Array:
    """Texts as the model reads them (one line each); runs of spaces are left, fastText skips them."""
    prepared = normalize_text(text, collapse=False) if preprocess == "normalize" else newlines_to_spaces(text)
    return prepared.combine_chunks() if isinstance(prepared, pa.ChunkedArray) else prepared


# --- loading and scoring ----------------------------------------------------------------------


def _fasttext() -> Any:  # the fasttext module (no type stubs)
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence "load_model does not return" noise
    return fasttext


@functools.lru_cache(maxsize=8)
def _load(uri: str, sha256: str | None) -> Any:
    path = resolve(ModelRef(uri=uri, sha256=sha256))
    try:
        model = _fasttext().load_model(str(path))
    except ValueError as exc:
        raise ConfigError(f"model {uri} is not a fastText model ({exc}); check the model URI") from exc
    log.info("loaded fastText model %s (labels %s)", uri, model.get_labels())
    return model


def load_classifier(ref: ModelRef) -> Any:
    """The fastText model at `ref`, verified against its sha256; loaded once per process."""
    return _load(ref.uri, ref.sha256)


def predict_label(model: Any, texts: list[str], label: str) -> np.ndarray:
    """Probability of `label` for each text (one line each), by one multi-line predict call."""
    labels = model.get_labels()
    if label not in labels:
        raise ConfigError(f"model has labels {labels}, not {label!r}; fix the configured label")
    if not texts:
        return np.zeros(0, np.float32)
    if len(labels) == 2:  # top label only: the other one's probability is the rest
        top, probs = model.predict(texts, k=1)
        p = np.minimum(np.fromiter((row[0] for row in probs), np.float64, len(texts)), 1.0)
        is_label = np.fromiter((row[0] == label for row in top), bool, len(texts))
        return np.where(is_label, p, 1.0 - p).astype(np.float32)
    every, probs = model.predict(texts, k=-1)
    return np.array([min(float(p[list(ls).index(label)]), 1.0) for ls, p in zip(every, probs, strict=True)], np.float32)


def score_texts(text: pa.Array | pa.ChunkedArray, cfg: FastTextModelConfig, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """The classifier's probability of `cfg.label` for every text, as float32."""
    model = load_classifier(cfg.model)
    prepared = prepare(text, cfg.preprocess)
    out = np.empty(len(prepared), np.float32)
    for start in range(0, len(prepared), batch_size):
        chunk = prepared.slice(start, batch_size).to_pylist()
        out[start : start + len(chunk)] = predict_label(model, chunk, cfg.label)
    return out


# --- training data ----------------------------------------------------------------------------


def read_texts(uri: str) -> pa.Array:
    """The `text` column of a Parquet or JSONL (optionally .gz / .zst) file, by URI."""
    try:
        if uri.endswith(".parquet"):
            return storage.read_table(uri, columns=["text"])["text"].combine_chunks()
        data = storage.read_bytes(uri)
        codec = {".gz": "gzip", ".zst": "zstd"}.get(Path(uri).suffix)
        stream = pa.CompressedInputStream(pa.BufferReader(data), codec) if codec else io.BytesIO(data)
        table = pa_json.read_json(stream)
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise BadInputError(f"cannot read training texts from {uri}: {exc}. Give JSONL or Parquet with a `text` column.") from exc
    if "text" not in table.column_names:
        raise BadInputError(f"{uri} has no `text` column (columns: {table.column_names})")
    return table["text"].cast(pa.string()).combine_chunks()


def _usable(texts: list[pa.Array]) -> tuple[pa.Array, int]:
    """Concatenated non-empty texts, and how many null / empty ones were skipped."""
    joined = pa.concat_arrays([t.cast(pa.string()) for t in texts]) if texts else pa.array([], pa.string())
    ok = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(joined)), 0), False)
    return joined.filter(ok), len(joined) - pc.sum(ok).as_py() if len(joined) else 0


# --- training ---------------------------------------------------------------------------------


@dataclass
class TrainParams:
    """fastText supervised-training parameters (fastText defaults, plus bigrams as DCLM)."""

    dim: int = 100
    epoch: int = 5
    lr: float = 0.1
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 2_000_000
    holdout: float = 0.2
    seed: int = 0
    # One thread: fastText then trains deterministically, so the same data gives the same bytes.
    threads: int = 1


@dataclass
class TrainedClassifier:
    model: ModelRef
    report: dict
    report_uri: str
    label: str


def evaluate(scores: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision, recall, F1 at `threshold`, and ROC AUC."""
    truth = truth.astype(bool)
    predicted = scores >= threshold
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1, "roc_auc": roc_auc(scores, truth)}


def _split(n: int, holdout: float, rng: random.Random) -> tuple[list[int], list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    n_test = round(n * holdout)
    if holdout > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return order[n_test:], order[:n_test]


def _artifact_uris(output: str) -> tuple[str, str]:
    stem = output.removesuffix(".bin")
    return stem + ".sha256", stem + ".eval.json"


def train_classifier(
    positives: list[str] | pa.Array,
    negatives: list[str] | pa.Array,
    output: str,
    label: str = "quality",
    params: TrainParams | None = None,
) -> TrainedClassifier:
    """Train a binary fastText classifier `label` vs not, evaluate it on a held-out split, write it.

    `positives` / `negatives` are input URIs (JSONL or Parquet with a `text` column) or the texts
    themselves. The model written is the one evaluated (trained on the training split only).
    """
    params = params or TrainParams()
    if not 0.0 <= params.holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {params.holdout}")
    pos, skipped_pos = _usable(_texts(positives))
    neg, skipped_neg = _usable(_texts(negatives))
    if len(pos) < 2 or len(neg) < 2:
        raise BadInputError(f"need at least 2 non-empty positive and negative texts, got {len(pos)} and {len(neg)}")
    pos_label, neg_label = label_names(label)
    rng = random.Random(params.seed)
    pos_train, pos_test = _split(len(pos), params.holdout, rng)
    neg_train, neg_test = _split(len(neg), params.holdout, rng)
    pos_norm, neg_norm = normalize_text(pos).to_pylist(), normalize_text(neg).to_pylist()
    train_lines = [f"{pos_label} {pos_norm[i]}" for i in pos_train] + [f"{neg_label} {neg_norm[i]}" for i in neg_train]
    rng.shuffle(train_lines)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="curation-fasttext-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
        local_model = Path(tmp) / "model.bin"
        _train_isolated(train_file, local_model, params)
        model = _fasttext().load_model(str(local_model))
        seconds = time.monotonic() - started
        test_texts = [pos_norm[i] for i in pos_test] + [neg_norm[i] for i in neg_test]
        truth = np.array([True] * len(pos_test) + [False] * len(neg_test))
        scores = predict_label(model, test_texts, pos_label)
        del model
        digest = sha256_file(local_model)
        sha_uri, report_uri = _artifact_uris(output)
        report = {
            "label": pos_label,
            "negative_label": neg_label,
            "model": output,
            "model_sha256": digest,
            "preprocess": "normalize",
            "params": params.__dict__,
            "train": {"positives": len(pos_train), "negatives": len(neg_train), "seconds": round(seconds, 3)},
            "test": {"positives": len(pos_test), "negatives": len(neg_test), **evaluate(scores, truth)},
            "skipped_empty": {"positives": skipped_pos, "negatives": skipped_neg},
            "inputs": {"positives": _described(positives), "negatives": _described(negatives)},
        }
        storage.upload_file(local_model, output)
    storage.write_bytes(sha_uri, f"{digest}  {storage.name(output)}\n".encode())
    storage.write_json(report_uri, report)
    log.info("trained %s: AUC %.4f on %d held-out texts; model %s", pos_label, report["test"]["roc_auc"], len(truth), output)
    return TrainedClassifier(model=ModelRef(uri=output, sha256=digest), report=report, report_uri=report_uri, label=pos_label)


_TRAIN_SCRIPT = """
import json, sys
import fasttext
job = json.loads(sys.argv[1])
fasttext.train_supervised(**job["args"]).save_model(job["output"])
"""


def _train_isolated(train_file: Path, output: Path, params: TrainParams) -> None:
    """Run fastText training in a fresh interpreter.

    fasttext-numpy2 0.10.4 can hit "Encountered NaN" when it trains while an earlier model is
    still alive in the same process (seen with the same file and seed succeeding in a new
    process), so each training gets its own process: deterministic and isolated.
    """
    args = {
        "input": str(train_file),
        "dim": params.dim,
        "epoch": params.epoch,
        "lr": params.lr,
        "wordNgrams": params.word_ngrams,
        "minCount": params.min_count,
        "bucket": params.bucket,
        "thread": params.threads,
        "seed": params.seed,
        "loss": "softmax",
        "verbose": 0,
    }
    job = json.dumps({"args": args, "output": str(output)})
    done = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, job], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        hint = " (training diverged: lower lr or dim)" if "NaN" in error else ""
        raise ConfigError(f"fastText training failed{hint}: {error}")


def _described(source: list[str] | pa.Array) -> list[str] | str:
    return list(source) if isinstance(source, list) else f"{len(source)} texts given in memory"


def _texts(source: list[str] | pa.Array) -> list[pa.Array]:
    """Input URIs (expanded: globs, prefixes) read as text arrays, or the texts given directly."""
    if isinstance(source, pa.Array | pa.ChunkedArray):
        return [source.combine_chunks() if isinstance(source, pa.ChunkedArray) else source]
    uris = storage.expand_inputs(source)
    if not uris:
        raise BadInputError(f"no training files match {source!r}")
    return [read_texts(uri) for uri in uris]


# --- demo models ------------------------------------------------------------------------------


def demo_texts(task: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Labelled texts from the sample-crawl generator: (positives, negatives), `n` of each.

    quality: clean articles vs keyword stuffing, navigation-only pages, "coming soon" notices and
    word salad (an article's own words shuffled: the same unigrams, so only bigrams tell it apart).
    toxicity: articles with 3-5 insults inserted (the toxic page kind) vs clean articles.
    """
    from curation.ingest import sample_crawl as sc

    builder = sc._CrawlBuilder(seed)
    r = builder.rng

    def article() -> list[str]:
        return builder._fresh_article()[2]

    if task == "toxicity":
        positives = []
        for _ in range(n):
            paras = article()
            for sentence in r.sample(sc._TOXIC_SENTENCES, r.randint(3, 5)):
                builder._insert(paras, builder._fill(sentence))
            positives.append("\n".join(paras))
        return positives, ["\n".join(article()) for _ in range(n)]
    if task != "quality":
        raise ConfigError(f"no demo data for task {task!r}; use quality or toxicity")
    positives = ["\n".join(article()) for _ in range(n)]
    negatives = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            negatives.append("\n".join([r.choice(sc._SPAM_LINES)] * r.randint(10, 40)))
        elif kind == 1:
            links = "Click here | Login | Sign up | " + " | ".join(f"Category {k}" for k in r.sample(range(1, 40), 8))
            negatives.append("\n".join([links] * r.randint(3, 12)))
        elif kind == 2:
            negatives.append(" ".join(r.choice(sc._SHORT) for _ in range(r.randint(1, 4))))
        else:
            words = " ".join(article()).split()
            r.shuffle(words)
            negatives.append(" ".join(words))
    return positives, negatives


DEMO_LABELS = {"quality": "quality", "toxicity": "toxic"}


def train_demo_models(out_dir: str, seed: int = 0, n: int = 400) -> dict[str, ModelRef]:
    """Train the small quality and toxicity models the offline demo scores with.

    Writes {out_dir}/quality.bin and {out_dir}/toxicity.bin (with .sha256 and .eval.json) and
    returns their ModelRefs; the positive labels are `__label__quality` and `__label__toxic`.
    Deterministic: the same seed gives byte-identical models.
    """
    params = TrainParams(dim=16, epoch=25, lr=0.5, bucket=100_000, seed=seed)
    refs = {}
    for task, label in DEMO_LABELS.items():
        positives, negatives = demo_texts(task, n, seed)
        trained = train_classifier(pa.array(positives), pa.array(negatives), storage.join(out_dir, f"{task}.bin"), label, params)
        refs[task] = trained.model
    return refs


def demo_scoring_overrides(refs: dict[str, ModelRef]) -> dict:
    """The `scoring` config section that points at the demo models (for load_config overrides)."""
    return {
        "scoring": {
            task: {"model": refs[task].model_dump(), "label": label_names(label)[0], "preprocess": "normalize"}
            for task, label in DEMO_LABELS.items()
            if task in refs
        }
    }


def report_of(model_uri: str) -> dict:
    """The evaluation report written next to a trained model."""
    return json.loads(storage.read_bytes(_artifact_uris(model_uri)[1]))
