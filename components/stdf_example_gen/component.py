"""StdfExampleGen: WaferExampleGen preset to read STDF V4 files (`wafers/*/*.stdf`).

Same spec, driver (TFX's FileBasedDriver: span/version resolution and the input fingerprint that
drives caching), parameters and output as WaferExampleGen, so it is a drop-in for it; the pipeline
keeps one ExampleGen node with the id "WaferExampleGen" (pipeline/summary.py reads it by that id),
so give it that id where it replaces the generic one: `StdfExampleGen(...).with_id("WaferExampleGen")`.
"""

from __future__ import annotations

from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.stdf_example_gen import executor
from components.wafer_example_gen.component import WaferExampleGen


class StdfExampleGen(WaferExampleGen):
    """Die-level tf.Examples from a directory of STDF V4 wafer-sort files and a labels sidecar."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        input_pattern: str = executor.INPUT_PATTERN,
        labels_pattern: str = "labels/*.parquet",
        bad_file_policy: str = "fail",
        output_config: example_gen_pb2.Output | None = None,
    ):
        """
        Args:
          input_base: dataset directory.
          input_pattern: glob of STDF files, relative to input_base.
          labels_pattern: glob of final-test label sidecar files, relative to input_base or absolute.
          bad_file_policy: "fail" stops the run on an unreadable file; "quarantine" skips it, counts
            it and lists it, with the byte offset of the fault, in the ingest report.
          output_config: splits; defaults to a 3:1 train/eval hash split by lot.
        """
        super().__init__(
            input_base=input_base,
            input_format=executor.INPUT_FORMAT,
            input_pattern=input_pattern,
            labels_pattern=labels_pattern,
            bad_file_policy=bad_file_policy,
            output_config=output_config,
        )
