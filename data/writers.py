"""Writers: turn generated `WaferData` into the files a tester and final test would leave behind.

Layout of a dataset directory (every writer):
    <out>/wafers/<lot_id>/<wafer_id>.<ext>   wafer-sort data, one file per wafer
    <out>/labels/<lot_id>.parquet            final-test labels sidecar, keyed by lot, wafer, part, x, y
    <out>/manifest.json                      generator config, product and its program, counts, ground truth
    <out>/patterns/<lot_id>.csv              pattern mode only: each wafer's defect patterns (data/patterns.py)

A maps-only dataset (`GeneratorConfig.maps_only`) has bins and no tests, so no final-test labels.

The wafer-sort files never contain labels: final test happens weeks later on another tester, so
labels always travel beside the sort data and are joined at ingest. Each file carries its test
program the way its format can (STDF: PTR / MPR / HBR / WCR / MIR fields; Parquet: a JSON
`data.program.FileProgram` in the schema metadata), so a reader learns the program from the file.
A new format is one more `WaferWriter`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.patterns import sidecar_text
from data.program import FileProgram
from data.stdf.writer import write_stdf_wafer
from data.synthetic import GeneratorConfig, WaferData, generate

# A writer takes a wafer and a directory and writes one file there, returning its path.
WaferWriter = Callable[[WaferData, str], str]


def write_parquet_wafer(wafer: WaferData, directory: str) -> str:
    """Columnar wafer-sort file: one row per die, one column per test feature; the program (names,
    units, limits, good bins, revision, wafer and die size) in the schema metadata."""
    table = pa.Table.from_pandas(wafer.dies, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[FileProgram.METADATA_KEY] = json.dumps(wafer.file_program().to_dict()).encode()
    table = table.replace_schema_metadata(metadata)
    path = os.path.join(directory, f"{wafer.wafer_id}.parquet")
    pq.write_table(table, path)
    return path


WRITERS: dict[str, tuple[WaferWriter, str]] = {"parquet": (write_parquet_wafer, "parquet")}
# STDF V4, one binary tester file per wafer (data/stdf/writer.py).
WRITERS["stdf"] = (write_stdf_wafer, "stdf")


def wafer_file_pattern(fmt: str) -> str:
    """Glob, relative to a dataset directory, of the wafer files written in format `fmt`."""
    ext = WRITERS[fmt][1] if fmt in WRITERS else fmt
    return f"wafers/*/*.{ext}"


# Data in spans (`waferflow generate --span K`, `--spans` on a run): each span's files in a folder
# of its own, `{SPAN}` being TFX's span placeholder (the ExampleGen picks the newest span).
SPAN_FOLDER = "span-{SPAN}"


def span_folder(span: int) -> str:
    """The folder of span `span` under a dataset directory, e.g. `span-3`."""
    return SPAN_FOLDER.replace("{SPAN}", str(span))


def write_dataset(config: GeneratorConfig, out_dir: str, fmt: str = "parquet") -> dict:
    """Generate the dataset for `config` and write it under `out_dir`; return the manifest."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(WRITERS)}")
    writer, _ = WRITERS[fmt]
    if not config.maps_only:
        os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    wafers_meta = []
    patterns_by_lot: dict[str, list] = {}
    labels_by_lot: dict[str, list] = {}
    n_dies = n_pass = n_ft_fail = 0
    prob_sum = observable_sum = 0.0
    hard_bins: dict[int, int] = {}
    for wafer in generate(config):
        lot_dir = os.path.join(out_dir, "wafers", wafer.lot_id)
        os.makedirs(lot_dir, exist_ok=True)
        path = writer(wafer, lot_dir)
        labels_by_lot.setdefault(wafer.lot_id, []).append(wafer.labels)
        patterns_by_lot.setdefault(wafer.lot_id, []).append((wafer.lot_id, wafer.wafer_id, wafer.pattern_classes))
        n_dies += len(wafer.dies)
        n_pass += int(wafer.dies["sort_pass"].sum())  # = len(wafer.labels) when there is a final test
        n_ft_fail += int(wafer.labels["ft_fail"].sum())
        prob_sum += float(wafer.labels["ft_fail_prob"].sum())
        observable_sum += float(wafer.labels["ft_fail_prob_observable"].sum())
        for number, count in wafer.dies["hard_bin"].value_counts().items():
            hard_bins[int(number)] = hard_bins.get(int(number), 0) + int(count)
        wafers_meta.append(
            {
                "lot_id": wafer.lot_id,
                "wafer_id": wafer.wafer_id,
                "file": os.path.relpath(path, out_dir),
                "dies": len(wafer.dies),
                "sort_pass": len(wafer.labels),
                "defect_pattern": wafer.defect_pattern,
                "bad_site": wafer.bad_site,
            }
        )
    # A maps-only dataset has no final test: no labels.
    for lot_id, frames in ({} if config.maps_only else labels_by_lot).items():
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        pq.write_table(table, os.path.join(out_dir, "labels", f"{lot_id}.parquet"))
    if config.patterns:
        os.makedirs(os.path.join(out_dir, "patterns"), exist_ok=True)
        for lot_id, rows in patterns_by_lot.items():
            with open(os.path.join(out_dir, "patterns", f"{lot_id}.csv"), "w") as f:
                f.write(sidecar_text(rows))
    spec = config.product_spec
    geometry = config.wafer_geometry
    manifest = {
        "generator": _generator_settings(config),
        "format": fmt,
        # What the product is: its program (one entry per feature), good bins, wafer and probe card.
        "product": spec.name,
        "program_revision": config.program_revision,
        "test_program": [t.to_dict() for t in spec.test_defs()],
        "good_hard_bins": list(spec.good_hard_bins),
        "good_soft_bins": list(spec.good_soft_bins),
        "geometry": {**dataclasses.asdict(geometry), "center_x": 0, "center_y": 0},
        "sites": spec.sites,
        "touchdown": list(spec.touchdown),
        # Counts; labels and probabilities are ground truth, for measuring, never for training.
        "dies": n_dies,
        "sort_pass": n_pass,
        "sort_yield": n_pass / max(n_dies, 1),
        "hard_bins": {str(b): hard_bins[b] for b in sorted(hard_bins)},
        "ft_fail": n_ft_fail,
        "ft_fail_rate": n_ft_fail / max(n_pass, 1),
        "mean_ft_fail_prob": prob_sum / max(n_pass, 1),
        "mean_ft_fail_prob_observable": observable_sum / max(n_pass, 1),
        "wafers": wafers_meta,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, default=_json_default)
    return manifest


# GeneratorConfig fields of the pattern mode: left out of the manifest when the mode is off (they
# change nothing then), so a default dataset's manifest is what it was before the mode existed.
_PATTERN_FIELDS = ("patterns", "pattern_weights", "mixed_share", "maps_only")


def _generator_settings(config: GeneratorConfig) -> dict:
    settings = dataclasses.asdict(config)
    if not config.patterns:
        for name in _PATTERN_FIELDS:
            settings.pop(name)
    return settings


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
