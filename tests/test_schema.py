import pyarrow as pa
import pytest

from curation.errors import ConfigError
from curation.schema import DOCUMENTS, DROPPED, HEURISTIC_SIGNALS, SCORED_DOCUMENTS, conform, describe


def test_every_column_is_documented_and_names_are_unique():
    for schema in (DOCUMENTS, HEURISTIC_SIGNALS, SCORED_DOCUMENTS, DROPPED):
        assert len(set(schema.names)) == len(schema.names)
        assert all(col["doc"] for col in describe(schema)), schema
    assert SCORED_DOCUMENTS.names[: len(DOCUMENTS)] == DOCUMENTS.names


def test_conform_reorders_and_casts_but_refuses_missing_columns():
    table = pa.table(
        {
            "reason": ["lang"],
            "stage": ["ingest"],
            "doc_id": [None],
            "url": ["u"],
            "source_uri": ["f"],
            "source_offset": pa.array([3], pa.int32()),
            "detail": [""],
            "extra": [1],
        }
    )
    out = conform(table, DROPPED, where="test")
    assert out.schema.names == DROPPED.names
    assert out.schema.field("source_offset").type == pa.int64()
    with pytest.raises(ConfigError, match=r"lacks columns \['detail'\]"):
        conform(table.drop_columns(["detail"]), DROPPED, where="test")
