import numpy as np
import pyarrow as pa
import pytest

from a2i_core.core import shards


def test_fixed_and_nested_lists_roundtrip(tmp_path):
    pooled = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    tokens = np.random.default_rng(1).standard_normal((3, 2, 4)).astype(np.float16)
    frames = [np.ones((n, 4), np.float32) * n for n in (1, 3, 2)]
    table = pa.table({"id": ["a", "b", "c"], "pooled": shards.fixed_list(pooled),
                      "tokens": shards.fixed_list(tokens, pa.float16()), "frames": shards.ragged_list(frames, 4)})
    assert table["tokens"].type == pa.list_(pa.list_(pa.float16(), 4), 2)
    shards.write_table(table, shards.shard_path(tmp_path, 0), "demo", {"model": "m"})
    back = shards.read_table(shards.shard_path(tmp_path, 0), "demo")
    assert np.array_equal(shards.to_numpy(back["pooled"]), pooled)
    assert np.array_equal(shards.to_numpy(back["tokens"]), tokens)
    assert back["frames"].to_pylist()[1] == frames[1].tolist()
    assert shards.table_metadata(shards.shard_path(tmp_path, 0))["model"] == "m"


def test_reader_refuses_other_kind_and_version(tmp_path):
    path = tmp_path / "t.parquet"
    shards.write_table(pa.table({"x": [1]}), path, "audio_features")
    with pytest.raises(shards.SchemaError, match="expected an a2i 'text_features' table"):
        shards.read_table(path, "text_features")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"a2i.schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(shards.SchemaError, match="schema version '99'"):
        shards.read_table(path, "audio_features")


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(shards.SchemaError, match="no part-\\*.parquet shards"):
        list(shards.iter_shards(tmp_path, "x"))
