import pytest

from curation import storage
from curation.errors import ConfigError
from curation.models import ModelRef, resolve, sha256_file


def test_local_model_with_matching_and_wrong_checksum(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"weights")
    digest = sha256_file(model)
    assert resolve(ModelRef(uri=str(model), sha256=digest)) == model
    with pytest.raises(ConfigError, match="sha256"):
        resolve(ModelRef(uri=str(model), sha256="0" * 64))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(ModelRef(uri=str(tmp_path / "missing.bin")))


def test_s3_model_is_downloaded_and_verified(s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/models/m.bin"
    storage.write_bytes(uri, b"weights on s3")
    local = tmp_path / "ref.bin"
    local.write_bytes(b"weights on s3")
    path = resolve(ModelRef(uri=uri, sha256=sha256_file(local)))
    assert path.read_bytes() == b"weights on s3"


def test_hf_hub_is_offline_in_tests():
    with pytest.raises(ConfigError, match="hf-hub"):
        resolve(ModelRef(uri="hf-hub:mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"))
