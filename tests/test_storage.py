import hashlib
import os

import pyarrow as pa
import pytest

from curation import storage
from curation.errors import BadInputError


def _table(n: int = 10) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64()), "text": [f"row {i}" for i in range(n)]})


def test_local_bytes_json_and_tables_round_trip(tmp_path):
    root = str(tmp_path / "a")
    storage.write_bytes(storage.join(root, "x", "b.bin"), b"hello")
    assert storage.read_bytes(f"file://{root}/x/b.bin") == b"hello"
    storage.write_json(storage.join(root, "c.json"), {"k": [1, 2]})
    assert storage.read_json(storage.join(root, "c.json")) == {"k": [1, 2]}
    size = storage.write_table(storage.join(root, "t.parquet"), _table())
    assert size == storage.size(storage.join(root, "t.parquet"))
    assert storage.read_table(storage.join(root, "t.parquet")).equals(_table())
    assert storage.parquet_rows(storage.join(root, "t.parquet")) == 10
    assert storage.list_files(root, ".parquet") == [f"{root}/t.parquet"]
    assert storage.list_files(root) == sorted([f"{root}/x/b.bin", f"{root}/c.json", f"{root}/t.parquet"])
    storage.delete(storage.join(root, "c.json"))
    storage.delete(storage.join(root, "c.json"))  # deleting twice is fine
    assert not storage.exists(storage.join(root, "c.json"))


def test_failed_table_write_leaves_nothing_that_looks_finished(tmp_path):
    target = str(tmp_path / "out" / "shard.parquet")
    with pytest.raises(RuntimeError), storage.TableWriter(target, _table().schema) as writer:
        writer.write(_table())
        raise RuntimeError("killed mid-write")
    assert not os.path.exists(target)
    assert os.listdir(tmp_path / "out") == []  # the temporary file is gone too


def test_in_flight_temporary_files_are_never_listed(tmp_path):
    (tmp_path / ".shard.parquet.tmp-1-ab").write_bytes(b"partial")
    (tmp_path / "done.parquet").write_bytes(b"x")
    assert storage.list_files(str(tmp_path)) == [str(tmp_path / "done.parquet")]


def test_expand_inputs_globs_and_prefixes(tmp_path):
    for name in ("b.warc.gz", "a.warc.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    got = storage.expand_inputs([str(tmp_path / "*.warc.gz"), str(tmp_path / "a.warc.gz")])
    assert got == [str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz")]  # sorted, no repeats
    assert len(storage.expand_inputs([str(tmp_path) + "/"])) == 3


def test_missing_input_is_bad_input_naming_the_file(tmp_path):
    with pytest.raises(BadInputError, match=r"nope\.warc\.gz"), storage.open_input(str(tmp_path / "nope.warc.gz")):
        pass


def test_s3_round_trip_on_a_real_server(s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/work"
    storage.write_bytes(storage.join(root, "b.bin"), b"hello")
    assert storage.read_bytes(storage.join(root, "b.bin")) == b"hello"
    storage.write_table(storage.join(root, "t.parquet"), _table(1000))
    assert storage.read_table(storage.join(root, "t.parquet")).equals(_table(1000))
    with storage.TableWriter(storage.join(root, "w.parquet"), _table().schema) as writer:
        writer.write(_table(5))
        writer.write(_table(7))
    assert storage.parquet_rows(storage.join(root, "w.parquet")) == 12
    assert storage.list_files(root, ".parquet") == [f"{root}/t.parquet", f"{root}/w.parquet"]
    assert storage.exists(storage.join(root, "b.bin")) and not storage.exists(storage.join(root, "zzz"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "zzz"))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 2**20))
    storage.upload_file(big, storage.join(root, "big.bin"))
    assert hashlib.sha256(storage.read_bytes(storage.join(root, "big.bin"))).digest() == hashlib.sha256(big.read_bytes()).digest()
    with storage.open_input(storage.join(root, "b.bin")) as fh:
        assert fh.read() == b"hello"
    storage.delete(storage.join(root, "b.bin"))
    assert not storage.exists(storage.join(root, "b.bin"))


def test_s3_failed_table_write_leaves_no_object(s3_bucket):
    uri = f"s3://{s3_bucket}/work/partial.parquet"
    with pytest.raises(RuntimeError), storage.TableWriter(uri, _table().schema) as writer:
        writer.write(_table())
        raise RuntimeError("killed mid-write")
    assert not storage.exists(uri)


def test_throttled_s3_upload_becomes_a_transient_error_after_five_tries(s3_server, s3_bucket, monkeypatch):
    from curation.errors import TransientError
    from tests.faulty_proxy import FaultyProxy

    with FaultyProxy(s3_server.endpoint_url, "PUT", f"/{s3_bucket}/t.parquet", failures=100) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        with (
            pytest.raises(TransientError, match="SlowDown"),
            storage.TableWriter(f"s3://{s3_bucket}/t.parquet", _table().schema) as w,
        ):
            w.write(_table())
        assert proxy.failed == 5  # the client's own retries, then the error that Airflow retries
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    assert not storage.exists(f"s3://{s3_bucket}/t.parquet")
