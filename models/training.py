"""Shared by the Tuner and the Trainer: datasets, training budget, calibration, precision policy, strategy."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from sklearn.linear_model import LogisticRegression
from tfx_bsl.public import tfxio

from models import features
from models.model import ModelInputs

# The Trainer's record of its budget and calibration, in its model_run directory (the summary reads it).
BUDGET_FILE = "training_budget.json"


def input_fn(
    file_pattern,
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    num_epochs: int | None = None,
    shuffle: bool = True,
) -> tf.data.Dataset:
    """Transformed examples as (features, label) batches, repeating unless `num_epochs` is set."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size,
            label_key=features.LABEL_KEY,
            num_epochs=num_epochs,
            shuffle=shuffle,
        ),
        tf_transform_output.transformed_metadata.schema,
    )


def validation_dataset(file_pattern, data_accessor, tf_transform_output: tft.TFTransformOutput, batch_size: int):
    """The validation split as a finite, unshuffled pass (each die exactly once), kept in memory
    after the first pass.

    Keras evaluates it after every epoch (and the Tuner after every epoch of every trial); reading
    and parsing the gzipped records again each time cost more than the evaluation itself (at 50k
    validation dies: about 4.8 s a pass from the files against 1.1 s from memory, 11 epochs a
    training run). Validation is a fraction of the training split, so holding it costs tens of MB
    at a million dies (about 500 bytes a die). The training split is read once too when it fits
    (`train_split`)."""
    return input_fn(file_pattern, data_accessor, tf_transform_output, batch_size, num_epochs=1, shuffle=False).cache()


@dataclasses.dataclass(frozen=True)
class SplitCounts:
    """Examples and positive labels of one split, from one pass over it."""

    examples: int
    positives: int

    @property
    def positive_rate(self) -> float:
        return self.positives / self.examples if self.examples else 0.0

    @property
    def base_logit(self) -> float:
        """log(p / (1 - p)) of the positive rate (clipped away from 0 and 1): the output bias that
        makes an untrained network predict the base rate."""
        rate = min(max(self.positive_rate, 1e-6), 1 - 1e-6)
        return math.log(rate / (1.0 - rate))


def count_split(dataset: tf.data.Dataset) -> SplitCounts:
    """Examples and positives in one pass over a finite (features, label) dataset."""
    positives = total = 0
    for _, label in dataset:
        label = np.asarray(label)
        positives += int(label.sum())
        total += label.size
    if total == 0:
        raise ValueError("no training examples: the train split is empty")
    return SplitCounts(total, positives)


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """One epoch is one pass over the training split: the budget grows with the data.

    A fixed step count trains a 300k-die split for barely more than one pass and a 5k-die
    split for dozens; counting passes (with early stopping on validation deciding how many)
    gives each size the training it needs."""
    if examples <= 0 or batch_size <= 0:
        raise ValueError(f"steps_per_epoch needs examples > 0 and batch_size > 0, got {examples}, {batch_size}")
    return math.ceil(examples / batch_size)


# The training split is held in memory, parsed, when its features take at most this many MiB
# (about 500 bytes a die: some 2 million training dies); above it, it streams from the files.
# The Tuner's and the Trainer's custom_config key, from `--train-memory-mib`.
TRAIN_MEMORY_KEY = "train_memory_mib"
DEFAULT_TRAIN_MEMORY_MIB = 1024
READ_BATCH = 4096  # examples parsed a step when the split is read once


@dataclasses.dataclass(frozen=True)
class TrainSplit:
    """The training split as Keras takes it: (features, label) batches, repeating, one pass per
    `steps` batches, with how it is fed and what it holds."""

    dataset: tf.data.Dataset
    counts: SplitCounts
    steps: int
    in_memory: bool
    bytes_held: int


def train_split(
    file_pattern,
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    seed: int,
    max_in_memory_bytes: int = DEFAULT_TRAIN_MEMORY_MIB * 2**20,
) -> TrainSplit:
    """The training split read once: counted, and held in memory when it fits in
    `max_in_memory_bytes`, else streamed from the files as `input_fn` gives it.

    Held in memory, every epoch is exactly one pass over every die in a new order (a shuffle of
    the whole split, seeded); streamed, each pass re-reads and re-parses the gzipped records and
    shuffles within TFXIO's window of 10,000 records. Reading and parsing cost more than the
    network's steps: at 312k dies (148,545 training dies) four epochs took 43 s streamed and 22-23 s
    from memory, same model and validation split (benchmarks/training_input.py); in the pipeline an
    epoch took 7.6 s streamed and 5.3 s from memory, the Tuner 47 s and 34 s.
    The count the budget needs comes from the same pass, so holding the split costs no extra read."""
    finite = input_fn(file_pattern, data_accessor, tf_transform_output, READ_BATCH, num_epochs=1, shuffle=False)
    held: list | None = []
    held_bytes = positives = total = 0
    for x, y in finite:
        y = y.numpy()
        positives += int(y.sum())
        total += y.size
        if held is None:
            continue
        part = ({k: v.numpy() for k, v in x.items()}, y)
        held_bytes += y.nbytes + sum(v.nbytes for v in part[0].values())
        if held_bytes > max_in_memory_bytes:
            held = None  # too large: stream it, and only count the rest
        else:
            held.append(part)
    if total == 0:
        raise ValueError("no training examples: the train split is empty")
    counts = SplitCounts(total, positives)
    steps = steps_per_epoch(total, batch_size)
    if held is None:
        dataset = input_fn(file_pattern, data_accessor, tf_transform_output, batch_size)
        return TrainSplit(dataset, counts, steps, in_memory=False, bytes_held=0)
    # Joined a feature at a time, each one's parts dropped as it is joined: the split is held about
    # twice at the peak (arrays, then tensors), not three times.
    features_held = {k: np.concatenate([p[0].pop(k) for p in held]) for k in list(held[0][0])}
    labels_held = np.concatenate([p[1] for p in held])
    del held
    return TrainSplit(in_memory_dataset(features_held, labels_held, batch_size, seed), counts, steps, True, held_bytes)


def in_memory_dataset(features_held: dict, labels: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """(features, label) batches of arrays held in memory: each pass a new seeded permutation of
    all rows, cut into batches (the last one partial), gathered a batch at a time; repeating."""
    tensors = ({k: tf.constant(v) for k, v in features_held.items()}, tf.constant(labels))
    n = int(labels.shape[0])
    return (
        tf.data.Dataset.range(n)
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda rows: tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors))
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """p = sigmoid(scale * logit + bias), fitted on validation (Platt scaling).

    Early stopping on validation AUC and a rare positive class leave the network's raw logits
    over- or under-confident; two parameters fitted on the validation split (never test) put
    the served probability back on the scale of the observed fail rate, which the ink decision's
    costs and anyone reading a probability rely on. A monotone map: AUC and ranking are unchanged."""

    scale: float = 1.0
    bias: float = 0.0

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.scale * np.asarray(logits, np.float64) + self.bias)))

    def to_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "bias": self.bias}


def fit_calibration(labels: np.ndarray, logits: np.ndarray) -> Calibration:
    """Platt scaling: an unregularised one-feature logistic regression of the label on the logit."""
    labels = np.asarray(labels).reshape(-1)
    logits = np.asarray(logits, np.float64).reshape(-1, 1)
    if labels.size == 0 or np.unique(labels).size < 2:
        raise ValueError("calibration needs both classes in the validation split")
    fit = LogisticRegression(penalty=None, solver="lbfgs", max_iter=1000).fit(logits, labels)
    scale = float(fit.coef_[0, 0])
    if scale > 0:
        return Calibration(scale=scale, bias=float(fit.intercept_[0]))
    # A slope <= 0 would turn the ranking round (validation says the logit is no better than noise):
    # keep the network's ranking and fit the intercept alone, logit(mean label) - mean logit
    # solved exactly by Newton's method on the one-parameter likelihood.
    bias = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(logits[:, 0] + bias)))
        step = (labels.sum() - p.sum()) / max(float((p * (1 - p)).sum()), 1e-12)
        bias += step
        if abs(step) < 1e-10:
            break
    return Calibration(scale=1.0, bias=float(bias))


def mixed_precision_policy() -> str:
    """float16 where a GPU runs the math, bfloat16 on CPU (no loss scaling needed)."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def make_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """The Trainer's distribution strategy: `mirrored` (one host, all local devices) or
    `multi_worker_mirrored` (several hosts, configured through TF_CONFIG by the orchestrator)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}")


def is_chief(tf_config: str | None) -> bool:
    """Whether this process writes the model, from the TF_CONFIG the orchestrator set (or None).

    TensorFlow's rule for MultiWorkerMirroredStrategy: every worker runs the same training and must
    take part in saving (the variables are read with collectives), but only the chief's copy is
    kept: the task of type "chief" (or "master", its older name that Vertex AI and TFX still
    accept), else worker 0 when the cluster has neither. Without TF_CONFIG, or without a cluster in
    it (one process, the default), that process is the chief. An "evaluator" or "ps" never is.
    """
    config = json.loads(tf_config) if tf_config else {}
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not cluster:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in ("chief", "master"):
        return True
    return kind == "worker" and index == 0 and not {"chief", "master"} & set(cluster)


def model_inputs_spec(tf_transform_output: tft.TFTransformOutput) -> ModelInputs:
    """What the model reads, from the Transform's outputs: its width follows the test program."""
    keys = [k for k in tf_transform_output.transformed_feature_spec() if k != features.LABEL_KEY]
    dense, categorical = features.model_input_names(keys)
    sizes = {
        features.transformed_name(features.SLOT_FEATURE): tf_transform_output.vocabulary_size_by_name(
            features.vocabulary_name(features.SLOT_FEATURE)
        )
        + features.NUM_OOV_BUCKETS,
        features.transformed_name(features.ZONE): features.N_ZONES,
    }
    return ModelInputs(dense=tuple(dense), categorical={k: sizes[k] for k in categorical})


class Stopwatch:
    """Wall seconds per named phase of a run, in the order they ran: the Trainer records them with
    its budget, so a slow Trainer says which of its steps was slow (the component's own time in
    MLMD also holds its start-up and the artifacts' bookkeeping)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def reset_policy() -> None:
    keras.mixed_precision.set_global_policy("float32")
