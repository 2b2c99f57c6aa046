"""Input artifacts for an exporter executor's Do(), over the session's small trained model."""

from __future__ import annotations

from tfx.types import standard_artifacts


def exporter_inputs(served_model, tmp_path, blessed: bool) -> dict:
    """model, model_blessing (blessed or not) and examples, as the Evaluator and ExampleGen hand them."""
    model = standard_artifacts.Model()
    model.uri = served_model.model_uri
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    examples = standard_artifacts.Examples()
    examples.uri = served_model.examples_uri
    examples.splits = ["train", "validation", "test"]
    return {"model": [model], "model_blessing": [blessing], "examples": [examples]}
