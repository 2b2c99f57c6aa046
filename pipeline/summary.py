"""The end-of-run summary, read back from MLMD and the artifacts it points to."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.drift_check.component import DriftReport
from components.drift_check.executor import DRIFT_FILE, read_drift
from components.model_export import serving_default_probabilities
from components.noise_aware_evaluator.executor import GATE_FILE, REASON_PROPERTY
from components.wafer_example_gen.executor import REPORT_FILE
from data.program import PROGRAM_FILE, TestProgram
from models import evaluation, operating_point
from models.features import LABEL_KEY
from models.training import BUDGET_FILE
from pipeline.metadata import read_only_store

REPORT_HTML = "report.html"  # the WaferReport component's page (components/wafer_report)

# Ground-truth columns of the synthetic data's labels sidecar (data/writers.py), read only here.
ORACLE_KEY = "ft_fail_prob"
OBSERVABLE_ORACLE_KEY = "ft_fail_prob_observable"

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
HEADLINE_METRICS = (
    "auc",
    "pr_auc",
    "precision",
    "recall",
    "calibration",
    "mean_label",
    "mean_prediction",
    "example_count",
)


def latest_artifact(store, pipeline_name: str, node: str, type_name: str):
    """Newest artifact of `type_name` attributed to pipeline node `node`."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    if context is None:
        return None
    types = {t.id: t.name for t in store.get_artifact_types()}
    artifacts = [a for a in store.get_artifacts_by_context(context.id) if types.get(a.type_id) == type_name]
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)) if artifacts else None


def _custom(artifact, key: str):
    if artifact is None or key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    return value.int_value if value.HasField("int_value") else value.string_value


def _input_artifacts(store, pipeline_name: str, node: str, key: str) -> list:
    """The artifacts the newest execution of `node` took as input `key` (e.g. the Transform's examples)."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    executions = store.get_executions_by_context(context.id) if context is not None else []
    if not executions:
        return []
    newest = max(executions, key=lambda e: (e.create_time_since_epoch, e.id))
    ids = [
        e.artifact_id
        for e in store.get_events_by_execution_ids([newest.id])
        if e.type == metadata_store_pb2.Event.INPUT and any(s.HasField("key") and s.key == key for s in e.path.steps)
    ]
    return store.get_artifacts_by_id(ids) if ids else []


def _split_frame(examples_uri: str, split: str) -> tuple[pd.DataFrame, list[bytes]]:
    """lot, wafer, x, y and label of every example of a split, and the serialized examples.

    Parsed in batches of 4,096 with only those five features (tf.io.parse_example), not one
    tf.train.Example at a time: the report and the summary read the whole train and test splits."""
    spec = {
        "lot_id": tf.io.FixedLenFeature([], tf.string),
        "wafer_id": tf.io.FixedLenFeature([], tf.string),
        "x": tf.io.FixedLenFeature([], tf.int64),
        "y": tf.io.FixedLenFeature([], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    parts, records = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        records.extend(batch.numpy().tolist())
        parts.append({k: v.numpy() for k, v in tf.io.parse_example(batch, spec).items()})
    columns = ["lot_id", "wafer_id", "x", "y", LABEL_KEY]
    if not parts:
        return pd.DataFrame(columns=columns), records
    frame = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in columns})
    for key in ("lot_id", "wafer_id"):
        frame[key] = frame[key].str.decode("utf-8")
    return frame, records


def test_figures(
    examples_uri: str, model_dir: str | None, labels_glob: str | None, split: str = "test", n_boot: int = 300
) -> dict | None:
    """The model's figures on the test split with 95% intervals from a bootstrap over lots
    (models/evaluation.py), its operating point there, and the ceilings of synthetic data.

    Ground truth of synthetic data (the generator's probabilities) lives only in the labels
    sidecar, never in the examples: it is joined here by lot, wafer and x/y, and only to show
    what the best possible model would score. Real data has no such columns."""
    frame, records = _split_frame(examples_uri, split)
    if frame.empty or frame[LABEL_KEY].nunique() < 2:
        return None
    columns = []
    op = None
    if model_dir:
        loaded = tf.saved_model.load(model_dir)
        frame["model"] = serving_default_probabilities(loaded, records)
        columns.append("model")
        op = operating_point.find(model_dir)
    truth_files = sorted(tf.io.gfile.glob(labels_glob)) if labels_glob else []
    if truth_files:
        truth = pd.concat([pd.read_parquet(f) for f in truth_files], ignore_index=True)
        keys = ["lot_id", "wafer_id", "x", "y"]
        for key, name in ((ORACLE_KEY, "ceiling"), (OBSERVABLE_ORACLE_KEY, "observable ceiling")):
            if key in truth.columns:
                part = truth.astype({"x": "int64", "y": "int64"}).drop_duplicates(keys, keep="last")[[*keys, key]]
                frame = frame.merge(part.rename(columns={key: name}), on=keys, how="left")
                if frame[name].notna().all():
                    columns.append(name)
                else:
                    frame = frame.drop(columns=[name])
    if not columns:
        return None
    out = {
        "split": split,
        "dies": len(frame),
        "fails": int(frame[LABEL_KEY].sum()),
        "lots": int(frame["lot_id"].nunique()),
        "bootstrap": n_boot,
        "scores": evaluation.scores_table(frame, columns, n_boot),
    }
    if op is not None:
        labels, scores = frame[LABEL_KEY].to_numpy(), frame["model"].to_numpy()

        def at_operating_point(sample: pd.DataFrame) -> dict[str, float]:
            y, p = sample[LABEL_KEY].to_numpy(), sample["model"].to_numpy()
            inked = op.ink(p)
            return {
                "expected_cost": operating_point.expected_cost(y, p, op.threshold, op.escape_cost, op.overkill_cost),
                "ink_rate": float(inked.mean()),
                "catch": float(inked[y == 1].mean()) if y.sum() else 0.0,
            }

        out["operating_point"] = {
            **op.to_dict(),
            "on_test": evaluation.bootstrap_by_lot(frame, at_operating_point, n_boot),
        }
        out["calibration"] = float(scores.mean() / max(labels.mean(), 1e-12))
    return out


def program_summary(examples_uri: str) -> dict | None:
    """The test program the ingest learned (data/program.py), in brief, plus the full program."""
    path = os.path.join(examples_uri, PROGRAM_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        program = TestProgram.from_json(f.read())
    sides = {}
    for t in program.tests:
        sides[t.sides] = sides.get(t.sides, 0) + 1
    return {
        "tests": len(program.tests),
        "ptr": sum(t.kind == "PTR" for t in program.tests),
        "mpr_pins": sum(t.kind == "MPR" for t in program.tests),
        "limits": sides,
        "log_scale": [t.feature for t in program.tests if t.log_scale],
        "good_hard_bins": program.good_hard_bins,
        "good_soft_bins": program.good_soft_bins,
        "grid": program.grid.to_dict() if program.grid else None,
        "revisions": program.revisions,
        "changes": program.changes,
        "program": program.to_dict(),
    }


def anomalies_per_split(anomalies_uri: str) -> dict[str, list[str]]:
    """Features ExampleValidator flagged against the schema, per split (empty lists: clean data)."""
    found = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(anomalies_uri, "Split-*", "SchemaDiff.pb"))):
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        split = os.path.basename(os.path.dirname(path))[len("Split-") :]
        found[split] = sorted(anomalies.anomaly_info)
    return found


def overall_metrics(evaluation_uri: str) -> dict[str, float]:
    result = tfma.load_eval_result(evaluation_uri)
    for slice_key, metrics in result.slicing_metrics:
        if slice_key == ():
            values = next(iter(metrics.values()))[""]  # output name "" then sub-key ""
            flat = {}
            for name, value in values.items():
                short = name.split("@")[0].lower()
                if "doubleValue" in value:
                    flat[short] = float(value["doubleValue"])  # JSON writes NaN as "NaN"
            return {k: flat[k] for k in HEADLINE_METRICS if k in flat}
    return {}


def run_summary(metadata_path: str, pipeline_name: str, labels_glob: str | None = None) -> dict:
    """Examples per split, ingest accounting, headline metrics, blessing, pushed model, cache hits."""
    store = read_only_store(metadata_path)

    summary: dict = {"pipeline": pipeline_name}
    runs = [c for c in store.get_contexts_by_type("pipeline_run")]
    if runs:
        run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
        states = {}
        for execution in store.get_executions_by_context(run.id):
            node = next(
                (c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"), str(execution.id)
            )
            states[node.split(".")[-1]] = _STATES.get(execution.last_known_state, "UNKNOWN").lower()
        summary["run"] = run.name
        summary["components"] = states

    examples = latest_artifact(store, pipeline_name, "WaferExampleGen", "Examples")
    if examples is not None:
        report_path = os.path.join(examples.uri, REPORT_FILE)
        if tf.io.gfile.exists(report_path):
            with tf.io.gfile.GFile(report_path) as f:
                summary["ingest"] = json.load(f)
                summary["examples_per_split"] = summary["ingest"].pop("examples_per_split", {})
        summary["test_program"] = program_summary(examples.uri)
        summary["span"] = _custom(examples, "span")
        window = _input_artifacts(store, pipeline_name, "Transform", "examples")
        summary["training_spans"] = sorted({_custom(a, "span") for a in window}) if window else []
        model = latest_artifact(store, pipeline_name, "Trainer", "Model")
        model_dir = os.path.join(model.uri, "Format-Serving") if model is not None else None
        summary["test"] = test_figures(examples.uri, model_dir, labels_glob)

    anomalies = latest_artifact(store, pipeline_name, "ExampleValidator", "ExampleAnomalies")
    if anomalies is not None:
        summary["anomalies"] = anomalies_per_split(anomalies.uri)
    evaluation = latest_artifact(store, pipeline_name, "Evaluator", "ModelEvaluation")
    if evaluation is not None:
        summary["metrics"] = overall_metrics(evaluation.uri)
        gate_path = os.path.join(evaluation.uri, GATE_FILE)
        if tf.io.gfile.exists(gate_path):
            with tf.io.gfile.GFile(gate_path) as f:
                summary["change_gate"] = json.load(f)
    model_run = latest_artifact(store, pipeline_name, "Trainer", "ModelRun")
    if model_run is not None and tf.io.gfile.exists(os.path.join(model_run.uri, BUDGET_FILE)):
        with tf.io.gfile.GFile(os.path.join(model_run.uri, BUDGET_FILE)) as f:
            summary["training"] = json.load(f)
    drift = latest_artifact(store, pipeline_name, "DriftCheck", DriftReport.TYPE_NAME)
    if drift is not None and tf.io.gfile.exists(os.path.join(drift.uri, DRIFT_FILE)):
        summary["drift"] = read_drift(drift.uri)
    blessing = latest_artifact(store, pipeline_name, "Evaluator", "ModelBlessing")
    summary["blessed"] = bool(_custom(blessing, "blessed")) if blessing is not None else None
    summary["blessing_withheld"] = _custom(blessing, REASON_PROPERTY) or None
    from components.wafer_report.component import WaferReportArtifact  # it imports this module

    report = latest_artifact(store, pipeline_name, "WaferReport", WaferReportArtifact.TYPE_NAME)
    if report is not None and tf.io.gfile.exists(os.path.join(report.uri, REPORT_HTML)):
        summary["report"] = os.path.join(report.uri, REPORT_HTML)
    pushed = latest_artifact(store, pipeline_name, "Pusher", "PushedModel")
    if pushed is not None and _custom(pushed, "pushed"):
        summary["pushed_model"] = _custom(pushed, "pushed_destination")
    else:
        summary["pushed_model"] = None
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"waferflow run summary ({summary.get('run', '?')})"]
    if "components" in summary:
        cached = sum(1 for s in summary["components"].values() if s == "cached")
        lines.append(
            f"  components: {len(summary['components'])} ({cached} cache hits): "
            + ", ".join(f"{k}={v}" for k, v in sorted(summary["components"].items()))
        )
    ingest = summary.get("ingest")
    if ingest:
        lines.append(
            f"  ingest: {ingest['dies_read']} dies read from {ingest['files_read']} files -> {ingest['examples']} "
            f"examples; excluded sort fails {ingest['excluded_sort_fail']}, no label {ingest['rejected_no_label']}, "
            f"superseded retests {ingest['superseded_retests']}, quarantined files {ingest['files_quarantined']}"
        )
        if ingest.get("duplicate_labels"):
            lines.append(
                f"  labels: {ingest['duplicate_labels']} duplicate sidecar rows (same lot, wafer, x, y); "
                "the last row of each die was used"
            )
        if ingest.get("orphan_labels"):
            lines.append(f"  labels: {ingest['orphan_labels']} sidecar rows match no sort-passing die")
    program = summary.get("test_program")
    if program:
        lines.extend(format_program(program))
        if ingest.get("skipped_records"):
            lines.append(
                "  records read past (not used): "
                + ", ".join(f"{k}={v}" for k, v in sorted(ingest["skipped_records"].items()))
            )
    if summary.get("training_spans"):
        lines.append(
            f"  spans: ingested span {summary.get('span')}; trained on spans "
            + ", ".join(str(s) for s in summary["training_spans"])
        )
    if "examples_per_split" in summary:
        lines.append("  examples per split: " + ", ".join(f"{k}={v}" for k, v in summary["examples_per_split"].items()))
    if "anomalies" in summary:
        flagged = {k: v for k, v in summary["anomalies"].items() if v}
        lines.append("  data anomalies: " + (", ".join(f"{k}: {v}" for k, v in flagged.items()) or "none"))
    if summary.get("metrics"):
        lines.append("  test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items()))
    if summary.get("test"):
        lines.extend(format_test(summary["test"]))
    if summary.get("training"):
        t = summary["training"]
        lines.append(
            f"  training: {t['train_examples']} dies ({t['train_positives']} fails), {t['steps_per_epoch']} steps per "
            f"epoch (one pass), best epoch {t['best_epoch']} of {t['epochs_run']} run (at most {t['max_epochs']}), "
            f"validation AUC {t['best_val_auc']:.3f}; calibration on {t['validation_examples']} validation dies: "
            f"p = sigmoid({t['calibration']['scale']:.3f} * logit + {t['calibration']['bias']:.3f})"
        )
    if summary.get("change_gate"):
        g = summary["change_gate"]
        lines.append(
            f"  change gate: candidate AUC {g['candidate_auc']:.4f} vs blessed {g['baseline_auc']:.4f}, difference "
            f"{g['difference']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}] (paired bootstrap of the {g['resampled']}s; "
            f"{g['lots']} test lots, {g['fails']} fails); "
            f"drop tolerated {g['tolerance']:.4f} = min(cap {g['cap']:.3f}, {g['z']} x se {g['se']:.4f})"
        )
    if summary.get("drift"):
        lines.append("  " + format_drift(summary["drift"]))
    blessed = f"  blessed: {summary.get('blessed')}"
    lines.append(blessed + (f" (withheld: {summary['blessing_withheld']})" if summary.get("blessing_withheld") else ""))
    lines.append(f"  pushed model: {summary.get('pushed_model') or 'not pushed'}")
    if summary.get("report"):
        lines.append(f"  report: {summary['report']}")
    return "\n".join(lines)


def format_program(program: dict) -> list[str]:
    """The learned test program in a few lines: tests, limits, good bins, grid, revisions, changes."""
    limits = ", ".join(f"{n} {k}" for k, n in sorted(program["limits"].items()))
    lines = [
        f"  test program (learned from the files): {program['tests']} features ({program['ptr']} PTR tests, "
        f"{program['mpr_pins']} MPR pins); limits: {limits}; log-scale margins: {len(program['log_scale'])}",
        f"    good hard bins {program['good_hard_bins']}, good soft bins {program['good_soft_bins']}",
    ]
    grid = program.get("grid")
    if grid:
        where = (
            f"WCR {grid['diameter_mm']:g} mm wafer, {grid['die_width_mm']:g} x {grid['die_height_mm']:g} mm dies"
            if grid.get("diameter_mm")
            else "no WCR: radius from the dies' extent"
        )
        lines.append(f"    die grid x {grid['x_min']}..{grid['x_max']}, y {grid['y_min']}..{grid['y_max']} ({where})")
    for revision in program["revisions"]:
        name = " ".join(str(revision.get(k, "")) for k in ("PART_TYP", "JOB_NAM", "JOB_REV")).strip() or "unnamed"
        lines.append(f"    revision {name}: {len(revision.get('lots', []))} lots")
    changes = program["changes"]
    if not changes:
        lines.append("    changes across lots: none")
    for change in changes[:10]:
        what = change.get("feature", "")
        detail = f" {change['from']} -> {change['to']}" if "from" in change else ""
        lines.append(f"    change in lot {change['lot']}: {change['change']} {what}{detail}")
    if len(changes) > 10:
        lines.append(f"    ... {len(changes) - 10} more changes in run_summary.json")
    return lines


def _interval(figure: dict, fmt: str = ".3f") -> str:
    return f"{figure['value']:{fmt}} [{figure['lo']:{fmt}}, {figure['hi']:{fmt}}]"


def format_test(test: dict) -> list[str]:
    """The test-split table: AUC, PR-AUC, catch rates, each with its lot-bootstrap interval."""
    lines = [
        f"  test split: {test['dies']} dies, {test['fails']} final-test fails, {test['lots']} lots; "
        f"[95% interval, bootstrap over lots x{test['bootstrap']}]"
    ]
    for name, figures in test["scores"].items():
        cells = ", ".join(f"{k} {_interval(v)}" for k, v in figures.items())
        label = {
            "model": "model",
            "ceiling": "ceiling (generator's true probability)",
            "observable ceiling": "observable ceiling (without its hidden per-die noise)",
        }.get(name, name)
        lines.append(f"    {label}: {cells}")
    op = test.get("operating_point")
    if op:
        on_test = op["on_test"]
        lines.append(
            f"  ink decision (threshold {op['threshold']:.4f} chosen on validation for escape:overkill cost "
            f"{op['escape_cost']:g}:{op['overkill_cost']:g}): on test inks {_interval(on_test['ink_rate'], '.2%')} "
            f"of dies, catches {_interval(on_test['catch'], '.1%')} of fails, expected cost per die "
            f"{_interval(on_test['expected_cost'])}; calibration (mean prediction / mean label) "
            f"{test['calibration']:.2f}"
        )
    return lines


def format_drift(drift: dict) -> str:
    """One line: what the newest data was compared with, the largest drifts, and the verdict."""
    if not drift.get("compared"):
        return "drift: nothing earlier to compare the newest data with (a first run, or Kubeflow)"
    spans = drift.get("reference_spans") or []
    against = f"span(s) {', '.join(map(str, spans))}" if any(spans) else "the previous run's data"
    top = ", ".join(f"{r['feature']} {r['value']:.3f}" for r in drift["features"][:3])
    verdict = (
        f"DRIFTED: {len(drift['drifted_features'])} test(s) over the bound, the model is not pushed"
        if drift["drifted"]
        else "within the bound"
    )
    return (
        f"drift: the newest data vs {against}, Jensen-Shannon over {len(drift['features'])} tests "
        f"(each against its closest earlier span), bound {drift['js_bound']:g}; largest {top}; {verdict}"
    )
