"""StdfExampleGen executor: the shared wafer-file executor, held to STDF input.

Reading, the label join, file-parallel Beam, the bad-file policy and the ingest accounting are those
of components/wafer_example_gen/executor.py; the STDF decoding is data/stdf/reader.py, reached
through `data.readers.READERS["stdf"]`. This executor only refuses any other input format, so a
component wired for STDF cannot silently ingest something else.
"""

from __future__ import annotations

from typing import Any

from components.wafer_example_gen import executor as wafer_executor
from data.writers import wafer_file_pattern

INPUT_FORMAT = "stdf"
INPUT_PATTERN = wafer_file_pattern("stdf")


class Executor(wafer_executor.Executor):
    """WaferExampleGen's executor for `input_format="stdf"` only."""

    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        fmt = exec_properties.get(wafer_executor.INPUT_FORMAT_KEY)
        if fmt != INPUT_FORMAT:
            raise ValueError(f"StdfExampleGen reads STDF files only, got input_format={fmt!r}")
        super().Do(input_dict, output_dict, exec_properties)
