"""Dataset loading from real files, splits and batching."""

from __future__ import annotations

import json

import pytest

from tinyml.data import DatasetError, batches, load_csv, load_jsonl, train_val_split

RECORDS = [{"id": i, "text": f"sample {i}", "label": i % 2} for i in range(20)]


@pytest.fixture
def jsonl_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n", encoding="utf-8")
    return path


@pytest.mark.hourly
def test_load_jsonl_reads_every_record(jsonl_file):
    """Every line becomes one record; blank lines are ignored."""
    assert load_jsonl(jsonl_file, required=("text", "label")) == RECORDS


@pytest.mark.daily
def test_jsonl_errors_name_file_and_line(tmp_path):
    """Malformed JSON and missing fields are reported with file:line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": 1}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: invalid JSON"):
        load_jsonl(bad)
    bad.write_text('{"text": "no label"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: missing field\(s\) label"):
        load_jsonl(bad, required=("text", "label"))


@pytest.mark.daily
def test_split_is_deterministic_and_disjoint():
    """The same seed gives the same split; train and val partition the records."""
    train, val = train_val_split(RECORDS, 0.25, seed=3)
    assert (train, val) == train_val_split(RECORDS, 0.25, seed=3)
    assert len(val) == 5
    assert sorted(r["id"] for r in train + val) == list(range(20))


@pytest.mark.daily
def test_batches_shuffle_and_drop_last():
    """Batches cover every record once; drop_last removes the short tail."""
    got = list(batches(RECORDS, 6, shuffle_seed=1))
    assert [len(b) for b in got] == [6, 6, 6, 2]
    assert sorted(r["id"] for b in got for r in b) == list(range(20))
    assert [len(b) for b in batches(RECORDS, 6, drop_last=True)] == [6, 6, 6]


@pytest.mark.integration
@pytest.mark.daily
def test_load_csv_converts_numeric_columns(tmp_path):
    """CSV rows come back as dicts with the named columns as floats."""
    path = tmp_path / "scores.csv"
    path.write_text("name,score,epoch\nalpha,0.5,1\nbeta,0.75,2\n", encoding="utf-8")
    rows = load_csv(path, numeric=("score", "epoch"))
    assert rows == [
        {"name": "alpha", "score": 0.5, "epoch": 1.0},
        {"name": "beta", "score": 0.75, "epoch": 2.0},
    ]
    path.write_text("name,score\ngamma,n/a\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="column 'score'"):
        load_csv(path, numeric=("score",))


@pytest.mark.integration
def test_missing_file_is_a_dataset_error(tmp_path):
    """A missing file raises DatasetError, not a bare OSError."""
    with pytest.raises(DatasetError, match="No such file"):
        load_jsonl(tmp_path / "absent.jsonl")
