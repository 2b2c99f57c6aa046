"""tf.Example encoding in the ingest: tfx-bsl's C++ coder (components/wafer_example_gen examples_of)
against one tf.train.Example built in Python per die (the ingest's encoding before it; the baseline).

    python benchmarks/example_encoding.py [--wafers 20] [--repeats 3]

Generated WF7N wafers, the sort-passing dies with every column the ingest writes; one process, one
core. Prints dies per second of each and the ratio; checks that both give the same examples.
"""

from __future__ import annotations

import argparse
import time

import tfx  # noqa: F401 (first: see components/drift_check/executor.py)

# isort: split
import numpy as np
import pandas as pd
import tensorflow as tf

from components.wafer_example_gen.executor import examples_of
from data.synthetic import GeneratorConfig, generate


def python_examples(frame: pd.DataFrame) -> list[bytes]:
    """The baseline: the per-die Python encoding the ingest used before examples_of."""
    out = []
    for row in frame.to_dict("records"):
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
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def best_rate(encode, frame: pd.DataFrame, repeats: int) -> tuple[float, list[bytes]]:
    best, result = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        result = encode(frame)
        best = min(best, time.perf_counter() - start)
    return len(frame) / best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wafers", type=int, default=20, help="generated wafers to encode (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default %(default)s)")
    args = parser.parse_args()
    wafers = generate(GeneratorConfig(lots=max(1, args.wafers // 5), wafers_per_lot=min(5, args.wafers), seed=1))
    frame = pd.concat([w.dies[w.dies.sort_pass] for w in wafers], ignore_index=True)
    baseline, reference = best_rate(python_examples, frame, args.repeats)
    arrow, encoded = best_rate(examples_of, frame, args.repeats)
    same = all(
        tf.train.Example.FromString(a) == tf.train.Example.FromString(b)
        for a, b in zip(encoded, reference, strict=True)
    )
    print(f"{len(frame)} dies x {frame.shape[1]} columns, best of {args.repeats}, one core")
    print(f"{'encoding':<34}{'dies/s':>10}{'ratio':>8}")
    print(f"{'Python tf.train.Example (baseline)':<34}{baseline:>10,.0f}{1.0:>8.2f}")
    print(f"{'tfx-bsl RecordBatchToExamples':<34}{arrow:>10,.0f}{arrow / baseline:>8.2f}")
    print(f"same examples: {same}")


if __name__ == "__main__":
    main()
