"""WaferMapExampleGen: an ExampleGen of wafer maps, one tf.Example per wafer, over the same tester
files as WaferExampleGen (the pattern pipeline's input; the example format is data/patterns.py's).

A WaferExampleGen subclass (so a FileBasedExampleGen with TFX's FileBasedDriver), so span/version
resolution and the input fingerprint that drives caching are TFX's own. Its parameters: the input
format, the pattern-labels sidecar glob (`{SPAN}` in it is this execution's span), the bad-file
policy, how lots are dealt to the splits, and the edge exclusion of the die grid (not in a WCR).
Its output is standard Examples: nothing downstream needs a custom artifact type.
"""

from __future__ import annotations

from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types.component_spec import ExecutionParameter

from components.wafer_example_gen.component import WaferExampleGen, WaferExampleGenSpec
from components.wafer_map_example_gen import executor
from data.patterns import SIDECAR_PATTERN
from data.wafer_maps import DEFAULT_EDGE_EXCLUSION_MM


class WaferMapExampleGenSpec(WaferExampleGenSpec):
    PARAMETERS = {
        **WaferExampleGenSpec.PARAMETERS,
        executor.EDGE_EXCLUSION_KEY: ExecutionParameter(type=float, optional=True),
    }


class WaferMapExampleGen(WaferExampleGen):
    """Wafer-map tf.Examples (one per labelled wafer) from wafer-test files and a pattern sidecar.

    The die ExampleGen's parameters, checks and lot splits, with its own spec and executor."""

    SPEC_CLASS = WaferMapExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

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
        if edge_exclusion_mm < 0:
            raise ValueError(f"edge_exclusion_mm must be 0 or more, got {edge_exclusion_mm}")
        super().__init__(
            input_base=input_base,
            input_format=input_format,
            input_pattern=input_pattern,
            labels_pattern=labels_pattern,
            bad_file_policy=bad_file_policy,
            output_config=output_config,
            split_by=split_by,
            edge_exclusion_mm=float(edge_exclusion_mm),
        )
