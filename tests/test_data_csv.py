"""CSV files streamed with typed columns (`data=csv data.params.stream=true`): the same columns, values
and fitted statistics as the in-memory source, split by files or a seeded hash of (file, line), and
every bad row one line naming the file and the line (or skipped and counted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sklearn.datasets

from layerprobe.data.csvstream import CSVStream
from layerprobe.data.pipeline import prepare
from layerprobe.data.source import DataSource
from tests.test_data import IRIS_COLUMNS, data_cfg, error_of, write_iris_csv


def csv_cfg(path: Path | str, *overrides: str, stream: bool = True) -> dict:
    cache = Path(str(path)).parent / "cache"
    return data_cfg(
        "data=csv", f"data.params.path={path}", f"data.params.stream={stream}", f"data.cache_dir={cache}", *overrides
    )


def write_parts(root: Path, parts: int = 3) -> np.ndarray:
    """The iris table cut into `parts` files with one header each; returns the rows (features, label)."""
    root.mkdir(parents=True, exist_ok=True)
    iris = sklearn.datasets.load_iris()
    bounds = np.linspace(0, 150, parts + 1).astype(int)
    for p in range(parts):
        write_iris_csv(root / f"part-{p}.csv", slice(bounds[p], bounds[p + 1]))
    return np.column_stack([iris.data, iris.target])


def columns(data: DataSource, split: str) -> dict[str, np.ndarray]:
    """Every feature and label of one pass over a split, in order."""
    batches = list(data.tf_dataset(split, training=False, batch_size=16, seed=0, cache=False).as_numpy_iterator())
    return {k: np.concatenate([{**f, **y}[k] for f, y in batches]) for k in {**batches[0][0], **batches[0][1]}}


def rows_of(data: DataSource, split: str) -> np.ndarray:
    got = columns(data, split)
    return np.column_stack([got["x"], got["species"]])


def test_a_stream_reads_the_same_typed_values_and_statistics_as_the_in_memory_source(tmp_path):
    write_iris_csv(tmp_path / "train.csv", slice(0, 120))
    write_iris_csv(tmp_path / "eval.csv", slice(120, None))
    split = ("data.splits.method=files", f"+data.splits.eval_params.path={tmp_path / 'eval.csv'}")
    streamed = prepare(csv_cfg(tmp_path / "train.csv", *split))
    loaded = prepare(csv_cfg(tmp_path / "train.csv", *split, stream=False))
    assert isinstance(streamed, CSVStream) and not isinstance(loaded, CSVStream)
    assert streamed.sizes() == loaded.sizes() == {"train": 120, "eval": 30}
    assert {k: (v.dtype.name, v.shape.as_list()) for g in streamed.element_spec for k, v in g.items()} == {
        "x": ("float32", [4]),
        "species": ("int64", []),
    }
    for key in ("0/x/mean", "0/x/std"):  # normalize: one streaming float64 pass over the train file
        np.testing.assert_allclose(streamed.fitted[key], loaded.fitted[key], rtol=1e-6)
    for split_name in ("train", "eval"):  # the files in line order: value for value
        a, b = columns(streamed, split_name), columns(loaded, split_name)
        np.testing.assert_allclose(a["x"], b["x"], rtol=1e-6)
        np.testing.assert_array_equal(a["species"], b["species"])


def test_undeclared_labels_are_typed_by_their_cells_and_feature_groups_stack_columns(tmp_path):
    write_iris_csv(tmp_path / "iris.csv")
    text = (tmp_path / "iris.csv").read_text().splitlines()
    text = [f"{line},{'score' if i == 0 else i * 0.5}" for i, line in enumerate(text)]  # a float column
    (tmp_path / "iris.csv").write_text("\n".join(text) + "\n")
    c = csv_cfg(
        tmp_path / "iris.csv",
        "data.transforms=[]",
        "data.params.dtypes={}",
        "data.params.labels=[species,score]",
    )
    c["params"]["features"] = {"sepal": ["sepal_length", "sepal_width"], "petal": ["petal_length", "petal_width"]}
    data = prepare(c)
    features, labels = data.element_spec
    assert {k: v.shape.as_list() for k, v in features.items()} == {"sepal": [2], "petal": [2]}
    assert (labels["species"].dtype.name, labels["score"].dtype.name) == ("int64", "float32")
    batches = list(data.tf_dataset("train", training=False, batch_size=200, seed=0).as_numpy_iterator())
    ((f, y),) = batches
    iris = sklearn.datasets.load_iris().data.astype(np.float32)
    line = np.rint(y["score"] / 0.5).astype(int) - 1  # the score column names the row
    np.testing.assert_array_equal(f["sepal"], iris[line, :2])
    np.testing.assert_array_equal(f["petal"], iris[line, 2:])


def test_a_glob_of_files_is_split_by_a_seeded_hash_of_file_and_line(tmp_path):
    rows = write_parts(tmp_path / "parts")
    c = csv_cfg(tmp_path / "parts" / "*.csv", "data.transforms=[]")
    data = prepare(c)
    train, evaluation = rows_of(data, "train"), rows_of(data, "eval")
    assert data.sizes() == {"train": len(train), "eval": len(evaluation)} and len(train) + len(evaluation) == 150
    assert 15 <= len(evaluation) <= 45  # eval_fraction 0.2 of 150
    together = np.concatenate([train, evaluation])
    np.testing.assert_allclose(together[np.lexsort(together.T[::-1])], rows[np.lexsort(rows.T[::-1])], rtol=1e-6)
    again = rows_of(prepare(c), "eval")  # stable: the same lines, in the same order
    np.testing.assert_array_equal(again, evaluation)
    other = rows_of(prepare(csv_cfg(tmp_path / "parts" / "*.csv", "data.transforms=[]", "data.splits.seed=1")), "eval")
    assert not np.array_equal(other, evaluation)
    keys = np.concatenate([k for _, _, k in data.probe_dataset("eval", batch_size=8).as_numpy_iterator()])
    assert len(set(keys.tolist())) == len(evaluation)  # a key per (file, line)
    halves = [data.probe_dataset("eval", batch_size=8, shard=(i, 2)) for i in range(2)]
    sharded = np.concatenate([k for h in halves for _, _, k in h.as_numpy_iterator()])
    assert sorted(sharded.tolist()) == sorted(keys.tolist())


def test_bad_rows_are_one_line_naming_the_file_and_the_line_or_skipped_and_counted(tmp_path):
    write_parts(tmp_path / "parts")
    bad = tmp_path / "parts" / "part-1.csv"
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # line 4: a cell short
    lines[6] = lines[6].rsplit(",", 1)[0] + ",setosa"  # line 7: not an int64 species
    bad.write_text("\n".join(lines) + "\n")
    glob = tmp_path / "parts" / "*.csv"
    assert error_of(prepare, csv_cfg(glob)) == f"data.params.path: line 4 has 4 cells, the header 5. Received: '{bad}'"
    lines[3] = lines[4]
    bad.write_text("\n".join(lines) + "\n")
    assert error_of(prepare, csv_cfg(glob)) == (
        f"data.params.dtypes.species: column 'species' on line 7 of {bad} is not int64. Received: 'setosa'"
    )
    lines[3] = lines[3].rsplit(",", 1)[0]
    bad.write_text("\n".join(lines) + "\n")
    data = prepare(csv_cfg(glob, "data.skip_corrupt=true"))
    assert data.skipped == 2 and sum(data.sizes().values()) == 148
    other = tmp_path / "parts" / "part-9.csv"
    other.write_text("a,b\n1,2\n")
    assert error_of(prepare, csv_cfg(glob)) == (
        f"data.params.path: its header ['a', 'b'] differs from {[*IRIS_COLUMNS, 'species']} of "
        f"{tmp_path / 'parts' / 'part-0.csv'}. Received: '{other}'"
    )
    other.write_text("")
    assert error_of(prepare, csv_cfg(glob)) == (
        f"data.params.path: the file is empty: a CSV needs a header line. Received: '{other}'"
    )


def test_static_rules_and_nan_checks_hold_for_the_stream(tmp_path):
    write_iris_csv(tmp_path / "iris.csv", blank=(140, 1))  # one NaN in feature x
    ranges = ("data.splits.method=range", "data.splits.train_range=[0,10]", "data.splits.eval_range=[10,null]")
    assert error_of(csv_cfg, tmp_path / "iris.csv", *ranges) == (  # in validate, without reading the file
        "data.splits.method: csv is split by its files or by a seeded hash of each record, not by row ranges. "
        "Received: 'range'. Allowed: files, fraction"
    )
    assert error_of(csv_cfg, tmp_path / "iris.csv", "data.params.stream=maybe") == (
        "data.params.stream: must be true or false. Received: 'maybe'"
    )
    msg = error_of(prepare, csv_cfg(tmp_path / "iris.csv"))
    assert msg.startswith("data.transforms[0]: normalize cannot take NaN, and feature 'x' of the ")
    assert msg.endswith(" split holds 1: put {name: fill_nan} before it. Received: 'x'")
    assert error_of(prepare, csv_cfg(tmp_path / "iris.csv", "data.params.features=[sepal_lenght]")).startswith(
        "data.params.features[0]: no such column. Received: 'sepal_lenght'. Did you mean 'sepal_length'?"
    )
