"""WaferMapExampleGen: an ExampleGen of wafer maps, one tf.Example per wafer, over the same tester
files as WaferExampleGen (the pattern pipeline's input; the example format is data/patterns.py's).

Like WaferExampleGen it is a FileBasedExampleGen subclass with TFX's FileBasedDriver, so span/version
resolution and the input fingerprint that drives caching are TFX's own. Its parameters: the input
format, the pattern-labels sidecar glob (`{SPAN}` in it is this execution's span), the bad-file
policy, how lots are dealt to the splits, and the edge exclusion of the die grid (not in a WCR).
Its output is standard Examples: nothing downstream needs a custom artifact type.
"""

from __future__ import annotations

from tfx import types
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.wafer_example_gen.component import lot_split_output_config
from components.wafer_map_example_gen import executor
from data.patterns import SIDECAR_PATTERN
from data.wafer_maps import DEFAULT_EDGE_EXCLUSION_MM


class WaferMapExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.INPUT_FORMAT_KEY: ExecutionParameter(type=str),
        executor.LABELS_PATTERN_KEY: ExecutionParameter(type=str),
        executor.BAD_FILE_POLICY_KEY: ExecutionParameter(type=str),
        executor.SPLIT_BY_KEY: ExecutionParameter(type=str, optional=True),
        executor.EDGE_EXCLUSION_KEY: ExecutionParameter(type=float, optional=True),
    }
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class WaferMapExampleGen(FileBasedExampleGen):
    """Wafer-map tf.Examples (one per labelled wafer) from wafer-test files and a pattern sidecar."""

    SPEC_CLASS = WaferMapExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(
        self,
        input_base: str,
        input_format: str = "stdf",
        input_pattern: str = "wafers/*/*.stdf",
        labels_pattern: str = SIDECAR_PATTERN,
        bad_file_policy: str = "fail",
        output_config: example_gen_pb2.Output | None = None,
        split_by: str = "lot_random",
        edge_exclusion_mm: float = DEFAULT_EDGE_EXCLUSION_MM,
    ):
        """
        Args:
          input_base: dataset directory.
          input_format: a key of `data.readers.READERS`.
          input_pattern: glob of tester files, relative to input_base.
          labels_pattern: glob of pattern-labels sidecar files (data/patterns.py), relative to
            input_base or absolute.
          bad_file_policy: "fail" stops the run on an unreadable file or one without wafer geometry;
            "quarantine" skips it, counts it and lists it in the ingest report.
          output_config: splits; defaults to train / validation / test by lot, 3:1:2.
          split_by: how lots are dealt to the splits: "lot_random", "lot_hash" or "time".
          edge_exclusion_mm: the band at the wafer's rim without dies (a WCR does not say it).
        """
        if input_format not in executor.READERS:
            raise ValueError(f"unknown input_format {input_format!r}; choose from {sorted(executor.READERS)}")
        if bad_file_policy not in executor.BAD_FILE_POLICIES:
            raise ValueError(f"bad_file_policy must be one of {executor.BAD_FILE_POLICIES}")
        if split_by not in executor.SPLIT_BY:
            raise ValueError(f"split_by must be one of {executor.SPLIT_BY}")
        if edge_exclusion_mm < 0:
            raise ValueError(f"edge_exclusion_mm must be 0 or more, got {edge_exclusion_mm}")
        spec = WaferMapExampleGenSpec(
            input_base=input_base,
            input_config=example_gen_pb2.Input(
                splits=[example_gen_pb2.Input.Split(name="single_split", pattern=input_pattern)]
            ),
            output_config=output_config or lot_split_output_config(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            input_format=input_format,
            labels_pattern=labels_pattern,
            bad_file_policy=bad_file_policy,
            split_by=split_by,
            edge_exclusion_mm=float(edge_exclusion_mm),
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        # FileBasedExampleGen's constructor builds TFX's own spec; this component's spec has more.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
