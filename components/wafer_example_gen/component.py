"""WaferExampleGen: an ExampleGen for wafer-test files (Parquet today, STDF V4 by the same path).

It keeps TFX's FileBasedDriver, so span/version resolution and the input fingerprint that drives
caching are TFX's own; it adds typed parameters: the input format, where the final-test
labels sidecar lives (`{SPAN}` in it is this execution's span), what to do with a file that cannot
be read, and how lots are dealt to the splits.

It is a FileBasedExampleGen subclass (with its own spec and constructor) so that the Kubeflow V2
compiler gives its task TFX's driver as a pre-cache-check hook: the driver resolves the newest
span and fingerprints the input files before KFP looks for a cached result, so new files under
the same data root are a new execution there too, not a cache hit.
"""

from __future__ import annotations

from tfx import types
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.wafer_example_gen import executor


class WaferExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.INPUT_FORMAT_KEY: ExecutionParameter(type=str),
        executor.LABELS_PATTERN_KEY: ExecutionParameter(type=str),
        executor.BAD_FILE_POLICY_KEY: ExecutionParameter(type=str),
        executor.SPLIT_BY_KEY: ExecutionParameter(type=str, optional=True),
    }
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


# Three lot-disjoint splits: train fits the model; validation early-stops it, schedules its learning
# rate and is the Tuner's objective; test is only for the Evaluator, the blessing and reported figures.
# 3:1:2 gives the test split a third of the lots: final-test fails are rare (3-4 %), and a figure
# measured on a few hundred of them is noisy.
SPLITS = ("train", "validation", "test")


def lot_split_output_config(train: int = 3, validation: int = 1, test: int = 2) -> example_gen_pb2.Output:
    """Split by lot in the proportions given (hash buckets): every die of a lot (so of a wafer) lands
    in the same split."""
    weights = dict(zip(SPLITS, (train, validation, test), strict=True))
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=w) for n, w in weights.items()],
            partition_feature_name="lot_id",
        )
    )


class WaferExampleGen(FileBasedExampleGen):
    """Die-level tf.Examples from a directory of wafer-test files and a labels sidecar."""

    SPEC_CLASS = WaferExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(
        self,
        input_base: str,
        input_format: str = "parquet",
        input_pattern: str = "wafers/*/*.parquet",
        labels_pattern: str = "labels/*.parquet",
        bad_file_policy: str = "fail",
        output_config: example_gen_pb2.Output | None = None,
        split_by: str = "lot_random",
        **extra_parameters,
    ):
        """
        Args:
          input_base: dataset directory.
          input_format: a key of `data.readers.READERS`.
          input_pattern: glob of tester files, relative to input_base.
          labels_pattern: glob of final-test label sidecar files, relative to input_base or absolute.
          bad_file_policy: "fail" stops the run on an unreadable file; "quarantine" skips it, counts
            it and lists it with the reason in the ingest report.
          output_config: splits; defaults to train / validation / test by lot, 3:1:1.
          split_by: how lots are dealt to the splits: "lot_random", "lot_hash" or "time" (executor.SPLIT_BY).
          extra_parameters: a subclass's own parameters, for its SPEC_CLASS (components/wafer_map_example_gen).
        """
        if input_format not in executor.READERS:
            raise ValueError(f"unknown input_format {input_format!r}; choose from {sorted(executor.READERS)}")
        if bad_file_policy not in executor.BAD_FILE_POLICIES:
            raise ValueError(f"bad_file_policy must be one of {executor.BAD_FILE_POLICIES}")
        if split_by not in executor.SPLIT_BY:
            raise ValueError(f"split_by must be one of {executor.SPLIT_BY}")
        input_config = example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern=input_pattern)]
        )
        spec = self.SPEC_CLASS(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config or lot_split_output_config(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            input_format=input_format,
            labels_pattern=labels_pattern,
            bad_file_policy=bad_file_policy,
            split_by=split_by,
            examples=types.Channel(type=standard_artifacts.Examples),
            **extra_parameters,
        )
        # FileBasedExampleGen's constructor builds TFX's own spec; this component's spec has more.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
