import datetime as dt

import pytest

from curation.config import BuildConfig, iso_week_id, load_config
from curation.errors import ConfigError


def test_defaults_yaml_and_overrides_resolve_in_order(tmp_path):
    path = tmp_path / "build.yaml"
    path.write_text("heuristics:\n  min_words: 80\n  max_words: 5000\npublish:\n  corpus: web-de\n")
    cfg = load_config(path, ["heuristics.min_words=30", "inputs=[a.warc.gz, b.warc.gz]"])
    assert cfg.heuristics.min_words == 30  # override beats the file
    assert cfg.heuristics.max_words == 5000  # file beats the default
    assert cfg.heuristics.min_stop_words == 2  # default kept
    assert cfg.publish.corpus == "web-de"
    assert cfg.inputs == ["a.warc.gz", "b.warc.gz"]


def test_config_hash_is_stable_and_sensitive():
    a, b = BuildConfig(), BuildConfig()
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 64
    changed = load_config(overrides={"heuristics": {"min_words": 51}})
    assert changed.config_hash() != a.config_hash()
    # The YAML dump reloads to the same config (what tasks do with the build's config.yaml).
    assert load_config(overrides=__import__("yaml").safe_load(changed.to_yaml())).config_hash() == changed.config_hash()


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"heuristics": {"min_wordz": 3}}, "min_wordz"),  # typo: unknown keys are refused
        ({"shard_limit": 0}, "shard_limit"),
        ({"build_id": "../escape"}, "build_id"),
    ],
)
def test_invalid_config_is_a_config_error_naming_the_field(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=overrides)


def test_bad_yaml_and_bad_override_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["no-equals-sign"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_build_id_defaults_to_iso_week():
    assert iso_week_id(dt.date(2026, 11, 23)) == "2026-W48"
    assert iso_week_id(dt.date(2027, 1, 1)) == "2026-W53"
    assert BuildConfig().resolved_build_id(dt.date(2026, 11, 29)) == "2026-W48"
    assert BuildConfig(build_id="trial-1").resolved_build_id() == "trial-1"
