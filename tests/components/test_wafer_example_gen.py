"""WaferExampleGen: construction, and Executor().Do() on small real files."""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.wafer_example_gen import executor
from components.wafer_example_gen.component import WaferExampleGen
from data.program import PROGRAM_FILE, FileProgram, TestProgram
from tests.example_gen_harness import run_example_gen


def program_features(dataset: str) -> list[str]:
    with open(os.path.join(dataset, "manifest.json")) as f:
        return [t["feature"] for t in json.load(f)["test_program"]]


def learned(out: str) -> TestProgram:
    with open(os.path.join(out, PROGRAM_FILE)) as f:
        return TestProgram.from_json(f.read())


def run_executor(input_base: str, out: str, policy: str = "fail") -> tuple[dict, dict[str, list]]:
    return run_example_gen(
        executor.Executor, input_base, out, input_format="parquet", input_pattern="wafers/*/*.parquet", policy=policy
    )


def _value(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    return getattr(feature, kind).value[0] if kind else None


def test_component_construction():
    gen = WaferExampleGen(input_base="/data", bad_file_policy="quarantine")
    assert gen.exec_properties["input_format"] == "parquet"
    assert gen.exec_properties["bad_file_policy"] == "quarantine"
    assert gen.outputs["examples"].type_name == "Examples"
    with pytest.raises(ValueError, match="bad_file_policy"):
        WaferExampleGen(input_base="/data", bad_file_policy="ignore")
    with pytest.raises(ValueError, match="input_format"):
        WaferExampleGen(input_base="/data", input_format="csv")


def test_every_die_is_accounted_for_and_lots_never_straddle_splits(small_dataset, tmp_path):
    report, splits = run_executor(small_dataset, str(tmp_path / "out"))
    manifest = json.load(open(os.path.join(small_dataset, "manifest.json")))
    assert report["dies_read"] == manifest["dies"]
    assert report["examples"] == manifest["sort_pass"] == sum(len(v) for v in splits.values())
    assert report["excluded_sort_fail"] == manifest["dies"] - manifest["sort_pass"]
    assert report["balanced"] and report["rejected_no_label"] == 0
    assert report["examples_per_split"] == {k: len(v) for k, v in splits.items()}
    lots = {k: {_value(e, "lot_id") for e in v} for k, v in splits.items()}
    assert lots["train"] and lots["validation"] and lots["test"]
    assert not (lots["train"] & lots["validation"] or lots["train"] & lots["test"] or lots["validation"] & lots["test"])
    example = splits["train"][0]
    for key in (
        "lot_id",
        "wafer_id",
        "x",
        "y",
        "head",
        "site",
        "hard_bin",
        "ft_fail",
        "n_fail_neighbors",
        "wafer_yield",
        *program_features(small_dataset),
    ):
        assert key in example.features.feature, key
    # Ground truth of synthetic data stays in the sidecar: no example carries it.
    assert not [k for e in splits["train"] for k in e.features.feature if k.startswith("ft_fail_prob")]
    # Every die's bins beside the examples, sort fails too (the run report reads them), and the
    # sort-passing ones are exactly the examples, bin for bin.
    bins = executor.read_die_bins(str(tmp_path / "out"))
    assert len(bins) == manifest["dies"] and int(bins["sort_pass"].sum()) == manifest["sort_pass"]
    assert not bins.duplicated(["lot_id", "wafer_id", "x", "y"]).any()
    from_examples = pd.DataFrame(
        [{k: _value(e, k) for k in ("lot_id", "wafer_id", "x", "y", "hard_bin")} for v in splits.values() for e in v]
    ).assign(lot_id=lambda d: d["lot_id"].str.decode("utf-8"), wafer_id=lambda d: d["wafer_id"].str.decode("utf-8"))
    passing = bins[bins["sort_pass"]].merge(from_examples, on=["lot_id", "wafer_id", "x", "y"], suffixes=("", "_ex"))
    assert len(passing) == manifest["sort_pass"]
    assert (passing["hard_bin"] == passing["hard_bin_ex"]).all()


def test_the_program_is_learned_from_the_files(small_dataset, tmp_path):
    out = str(tmp_path / "out")
    report, _ = run_executor(small_dataset, out)
    program = learned(out)
    with open(os.path.join(small_dataset, "manifest.json")) as f:
        manifest = json.load(f)
    assert program.features == [t["feature"] for t in manifest["test_program"]]
    by_feature = program.by_feature()
    for test in manifest["test_program"]:
        got = by_feature[test["feature"]]
        assert (got.name, got.units, got.lo_limit, got.hi_limit) == (
            test["name"],
            test["units"],
            test["lo_limit"],
            test["hi_limit"],
        )
    assert program.good_hard_bins == manifest["good_hard_bins"]
    assert program.grid.diameter_mm == manifest["geometry"]["diameter_mm"]
    assert program.changes == [] and len(program.revisions) == 1
    # Leakage-like tests are right-skewed and positive: their margins are taken on a log scale.
    assert {t["feature"] for t in manifest["test_program"] if t["log_scale"]} <= {
        t.feature for t in program.tests if t.log_scale
    } | set()
    assert report["test_program"]["tests"] == len(program.tests)


def _edit_program(files: list[str], edit) -> None:
    """Rewrite Parquet wafer files with their program metadata (and columns) changed by `edit`."""
    import pyarrow.parquet as pq

    for path in files:
        table = pq.read_table(path)
        program = FileProgram.from_dict(json.loads(table.schema.metadata[FileProgram.METADATA_KEY]))
        frame = table.to_pandas()
        program, frame = edit(program, frame)
        table = pa_table(frame, {**table.schema.metadata, FileProgram.METADATA_KEY: json.dumps(program.to_dict())})
        pq.write_table(table, path)


def pa_table(frame, metadata):
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.replace_schema_metadata({k: v for k, v in metadata.items() if k != b"pandas"})


def test_program_changes_between_lots_are_detected(small_dataset, tmp_path):
    import dataclasses

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    lots = sorted(os.listdir(data / "wafers"))
    features = program_features(small_dataset)
    tightened, dropped = features[0], features[1]

    def revise(program, frame):
        tests = []
        for t in program.tests:
            if t.feature == tightened:
                t = dataclasses.replace(t, hi_limit=t.hi_limit * 0.99)
            if t.feature != dropped:
                tests.append(t)
        new = dataclasses.replace(program.tests[0], number=99000, name="new_screen", lo_limit=0.0, hi_limit=1.0)
        frame = frame.drop(columns=[dropped]).assign(t99000=np.float32(0.5))
        revision = {**program.revision, "JOB_REV": "2.0"}
        start = program.start_time + 10 * 86_400  # ten days later than any lot of the first revision
        return dataclasses.replace(program, tests=[*tests, new], revision=revision, start_time=start), frame

    _edit_program(sorted(glob.glob(str(data / "wafers" / lots[-1] / "*.parquet"))), revise)
    out = str(tmp_path / "out")
    report, splits = run_executor(str(data), out)
    program = learned(out)
    changes = {(c["change"], c.get("feature")) for c in program.changes}
    assert {("revision", None), ("added", "t99000"), ("dropped", dropped), ("redefined", tightened)} <= changes
    assert all(c["lot"] == lots[-1] for c in program.changes)
    # Training uses the union of tests; a changed limit is the newest revision's everywhere.
    assert {"t99000", dropped} <= set(program.features)
    old = json.load(open(os.path.join(small_dataset, "manifest.json")))["test_program"][0]["hi_limit"]
    assert program.by_feature()[tightened].hi_limit == pytest.approx(old * 0.99)
    assert {r["JOB_REV"] for r in program.revisions} == {"1.0", "2.0"}
    assert report["balanced"]


def test_duplicate_label_rows_are_counted(small_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    label_file = sorted(glob.glob(str(data / "labels" / "*.parquet")))[0]
    labels = pd.read_parquet(label_file)
    pd.concat([labels, labels.iloc[:7]], ignore_index=True).to_parquet(label_file)
    report, _ = run_executor(str(data), str(tmp_path / "out"))
    assert report["duplicate_labels"] == 7
    assert report["rejected_no_label"] == 0 and report["balanced"]


def test_retests_in_several_files_are_ordered_by_test_time_not_path(small_dataset, tmp_path):
    import dataclasses

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    first = sorted(glob.glob(str(data / "wafers" / "*" / "*.parquet")))[0]
    retest = os.path.join(os.path.dirname(first), "0_retest.parquet")  # sorts before the first pass
    shutil.copy(first, retest)
    feature = program_features(small_dataset)[0]

    def later_and_shifted(program, frame):
        frame = frame.head(5).assign(**{feature: np.float32(-1.0)})  # five dies tested again
        return dataclasses.replace(program, start_time=program.start_time + 3600), frame

    _edit_program([retest], later_and_shifted)
    report, splits = run_executor(str(data), str(tmp_path / "out"))
    assert report["superseded_retests"] == 5 and report["balanced"]
    retested = pd.read_parquet(retest)
    wafer_id = retested.wafer_id.iloc[0].encode()
    values = {
        (_value(e, "x"), _value(e, "y")): _value(e, feature)
        for v in splits.values()
        for e in v
        if _value(e, "wafer_id") == wafer_id
    }
    for x, y, passed in zip(retested.x, retested.y, retested.sort_pass, strict=True):
        if passed:
            assert values[(x, y)] == -1.0  # the later test wins though its file sorts first


def test_missing_labels_and_missing_tests_are_counted_not_zeroed(small_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    label_file = sorted(glob.glob(str(data / "labels" / "*.parquet")))[0]
    labels = pd.read_parquet(label_file)
    pd.read_parquet(label_file).iloc[10:].to_parquet(label_file)  # 10 dies lose their label
    wafer_file = sorted(glob.glob(str(data / "wafers" / "*" / "*.parquet")))[0]
    wafer = pd.read_parquet(wafer_file)
    target = labels.iloc[20]
    row = (wafer.x == target.x) & (wafer.y == target.y)
    features = program_features(small_dataset)
    wafer.loc[row, features[3]] = np.nan  # a labelled pass die missing one test
    wafer.to_parquet(wafer_file)

    report, splits = run_executor(str(data), str(tmp_path / "out"))
    assert report["rejected_no_label"] == 10 and report["balanced"]
    (die,) = [
        e
        for v in splits.values()
        for e in v
        if _value(e, "wafer_id") == target.wafer_id.encode()
        and (_value(e, "x"), _value(e, "y")) == (target.x, target.y)
    ]
    assert features[3] not in die.features.feature
    assert features[4] in die.features.feature


def _with_bad_file(dataset: str, tmp_path, name: str, content: bytes) -> str:
    """A copy of `dataset` with one unreadable wafer file added; returns the copy's path."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = data / "wafers" / "BAD" / name
    bad.parent.mkdir()
    bad.write_bytes(content)
    return str(data)


def test_bad_file_fails_the_run_naming_the_file(small_dataset, tmp_path):
    data = _with_bad_file(small_dataset, tmp_path, "truncated.parquet", b"PAR1 truncated")
    with pytest.raises(Exception, match="truncated.parquet"):
        run_executor(data, str(tmp_path / "out"), policy="fail")


def test_bad_file_is_quarantined_and_reported(small_dataset, tmp_path):
    data = _with_bad_file(small_dataset, tmp_path, "garbage.parquet", b"not parquet at all")
    report, splits = run_executor(data, str(tmp_path / "out"), policy="quarantine")
    assert report["files_quarantined"] == 1
    assert report["quarantined"][0]["file"].endswith("garbage.parquet")
    assert "not a readable Parquet" in report["quarantined"][0]["error"]
    assert report["files_read"] == len(glob.glob(f"{small_dataset}/wafers/*/*.parquet"))
    assert sum(len(v) for v in splits.values()) == report["examples"] > 0


def test_stdf_files_compressed_retested_and_bad_ones_quarantined(small_stdf_dataset, tmp_path):
    import gzip

    from data.stdf.writer import encode_wafer
    from data.synthetic import generate
    from tests.conftest import SMALL
    from tests.stdf_builder import Stdf

    data = tmp_path / "data"
    shutil.copytree(small_stdf_dataset, data)
    manifest = json.load(open(data / "manifest.json"))
    wafer = next(generate(SMALL))
    first = data / "wafers" / wafer.lot_id / f"{wafer.wafer_id}.stdf"
    # The same wafer archived compressed, and probed again on three dies in the same file.
    retested = encode_wafer(wafer, retests=wafer.dies.iloc[[3, 10, 20]])
    first.unlink()
    (first.parent / f"{wafer.wafer_id}.stdf.gz").write_bytes(gzip.compress(retested))
    # A tester crash cut one file short, and a final-test file (parts without X/Y) slipped in.
    (data / "wafers" / "CRASHED").mkdir()
    (data / "wafers" / "CRASHED" / "W99.stdf").write_bytes(encode_wafer(wafer)[:5000])
    final_test = Stdf().mir(lot="FT1").pir().ptr(1, 0.5).prr(-32768, -32768).bytes()
    (data / "wafers" / "CRASHED" / "FT1.stdf").write_bytes(final_test)

    report, splits = run_example_gen(
        executor.Executor,
        str(data),
        str(tmp_path / "out"),
        input_format="stdf",
        input_pattern="wafers/*/*.stdf*",
        policy="quarantine",
    )
    assert report["files_read"] == len(manifest["wafers"]) and report["files_quarantined"] == 2
    errors = {os.path.basename(q["file"]): q["error"] for q in report["quarantined"]}
    assert "truncated file" in errors["W99.stdf"] and "byte offset" in errors["W99.stdf"]
    assert "without die coordinates" in errors["FT1.stdf"]
    assert report["superseded_retests"] == 3
    assert report["dies_read"] == manifest["dies"] + 3
    assert report["examples"] == manifest["sort_pass"] == sum(len(v) for v in splits.values())
    assert report["balanced"] and report["rejected_no_label"] == 0
    # The die bins: one row per die after retests, none from the quarantined files.
    bins = executor.read_die_bins(str(tmp_path / "out"))
    assert len(bins) == manifest["dies"] and set(bins["lot_id"]) == {w["lot_id"] for w in manifest["wafers"]}


def test_bad_stdf_file_fails_the_run_naming_file_and_offset(small_stdf_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_stdf_dataset, data)
    (data / "wafers" / "BAD").mkdir()
    (data / "wafers" / "BAD" / "notes.stdf").write_bytes(b"lot notes, not a tester file")
    with pytest.raises(Exception, match=r"notes\.stdf at byte offset 0: not an STDF file"):
        run_example_gen(
            executor.Executor,
            str(data),
            str(tmp_path / "out"),
            input_format="stdf",
            input_pattern="wafers/*/*.stdf*",
            policy="fail",
        )


def test_lots_are_dealt_in_proportion_by_time_or_at_random():
    starts = {f"L{i}": 1_000 + (9 - i) * 86_400 for i in range(10)}  # L9 tested first, L0 last
    by_time = executor.split_assignment(starts, [3, 1, 2], "time")
    # Oldest five train (3/6 of 10), the next two validation (1/6, rounded up), newest three test.
    assert [lot for lot in sorted(starts, key=starts.get) if by_time[lot] == 0] == ["L9", "L8", "L7", "L6", "L5"]
    assert sorted(by_time[lot] for lot in starts) == [0] * 5 + [1] * 2 + [2] * 3
    at_random = executor.split_assignment(starts, [3, 1, 2], "lot_random")
    assert sorted(at_random.values()) == sorted(by_time.values())  # the same sizes, other lots
    assert at_random == executor.split_assignment(dict(reversed(starts.items())), [3, 1, 2], "lot_random")
    # Every split gets a lot even when the proportions would round one to nothing.
    assert sorted(executor.split_assignment({"a": 1, "b": 2, "c": 3}, [8, 1, 1], "time").values()) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 3 lots"):
        executor.split_assignment({"a": 1, "b": 2}, [3, 1, 2], "time")


def test_time_split_puts_the_newest_lots_in_test(small_dataset, tmp_path):
    report, splits = run_example_gen(
        executor.Executor,
        small_dataset,
        str(tmp_path / "out"),
        input_format="parquet",
        input_pattern="wafers/*/*.parquet",
        split_by="time",
    )
    manifest = json.load(open(os.path.join(small_dataset, "manifest.json")))
    lots = {k: {_value(e, "lot_id").decode() for e in v} for k, v in splits.items()}
    assert all(lots.values()) and report["balanced"]
    starts = {}
    for path in glob.glob(os.path.join(small_dataset, "wafers", "*", "*.parquet")):
        import pyarrow.parquet as pq

        program = FileProgram.from_dict(json.loads(pq.read_schema(path).metadata[FileProgram.METADATA_KEY]))
        lot = os.path.basename(os.path.dirname(path))
        starts[lot] = min(starts.get(lot, program.start_time), program.start_time)
    newest_train = max(starts[lot] for lot in lots["train"])
    assert all(starts[lot] > newest_train for lot in lots["validation"] | lots["test"])
    assert min(starts[lot] for lot in lots["test"]) > max(starts[lot] for lot in lots["validation"])
    assert sum(len(v) for v in splits.values()) == manifest["sort_pass"]


def test_ground_truth_in_the_sidecar_cannot_reach_the_examples(small_dataset, tmp_path):
    """Leakage: with the generator's probability columns replaced by the label itself, the ingest
    writes byte-identical examples, so no model trained on them can change."""
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    for path in glob.glob(str(data / "labels" / "*.parquet")):
        labels = pd.read_parquet(path)
        for column in ("ft_fail_prob", "ft_fail_prob_observable"):
            labels[column] = labels["ft_fail"].astype(np.float32)
        labels.to_parquet(path)
    _, original = run_executor(small_dataset, str(tmp_path / "a"))
    _, leaked = run_executor(str(data), str(tmp_path / "b"))

    def records(splits):
        return {k: sorted(e.SerializeToString(deterministic=True) for e in v) for k, v in splits.items()}

    assert records(original) == records(leaked)


def _python_example(row: dict) -> tf.train.Example:
    """The reference encoding, one tf.train.Example built in Python per die (the ingest's before)."""
    feature = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, str):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif isinstance(value, (bool, np.bool_, int, np.integer)):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        elif not np.isnan(float(value)):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def test_arrow_encoding_equals_one_example_per_die_built_in_python():
    """examples_of (tfx-bsl's C++ coder) writes each die as the Python reference does: NaN and None
    left out (not an empty feature), floats as float32, ints and booleans as int64, in row order."""
    rng = np.random.default_rng(0)
    n = 500
    frame = pd.DataFrame(
        {
            "lot_id": [f"L{i % 7}" for i in range(n)],
            "x": rng.integers(-20, 20, n),
            "t1000": rng.normal(size=n),
            "t1010": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
            "screen": np.where(rng.random(n) < 0.5, np.nan, rng.random(n)),
            "sort_pass": rng.random(n) < 0.9,
            "note": [None if i % 3 else "a" for i in range(n)],
        }
    )
    encoded = executor.examples_of(frame)
    assert len(encoded) == n
    for serialized, row in zip(encoded, frame.to_dict("records"), strict=True):
        assert tf.train.Example.FromString(serialized) == _python_example(row)


def test_the_post_write_count_counts_every_record_across_files_and_batches(tmp_path):
    """The count that checks the runner lost nothing reads records in batches of COUNT_BATCH: a split of
    two files, one of them a batch and a bit, counts every record once; an empty split counts 0."""
    split = tmp_path / "Split-train"
    split.mkdir()
    sizes = [3, executor.COUNT_BATCH + 2]
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for i, size in enumerate(sizes):
        with tf.io.TFRecordWriter(str(split / f"data_tfrecord-{i:05d}-of-00002.gz"), options) as writer:
            for record in range(size):
                writer.write(f"die {record}".encode())
    assert executor.count_records(str(split)) == sum(sizes)
    (tmp_path / "Split-test").mkdir()
    assert executor.count_records(str(tmp_path / "Split-test")) == 0
