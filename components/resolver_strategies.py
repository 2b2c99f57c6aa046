"""Resolver strategies for local runs: the rolling training window, and the earlier data the
newest is checked for drift against.

The rolling training window: the Examples of the newest `num_spans` spans, one ingest per span.

TFX's SpanRangeStrategy returns every artifact whose span is in range: a span ingested twice (its
files changed, so a new fingerprint and a new ExampleGen execution) would be trained on twice.
This strategy keeps the newest ingest of each span. Its inputs are this run's ExampleGen output
(`newest`, which also makes the resolver wait for the ExampleGen) and every Examples artifact of the
pipeline (`examples`, a plain Channel: all runs; a producer filter on the same node as `newest`
trips TFX's input graph, so the strategy keeps the artifacts an ExampleGen driver stamped with an
input fingerprint, which the Transform's Examples lack); `examples` comes back as the window,
newest span first, `newest` unchanged.

Local and Beam orchestrators run it; the Kubeflow V2 compiler accepts only TFX's two latest-artifact
resolvers, so on Kubeflow the model trains on the newest span alone (docs/kubeflow.md).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.common import resolver

EXAMPLES_KEY = "examples"
REPORTS_KEY = "reports"
EXAMPLES_URI = "examples_uri"  # the DriftReport's: which examples its statistics are of
NEWEST_KEY = "newest"
SPAN = "span"
FINGERPRINT = "input_fingerprint"  # set by TFX's ExampleGen driver on what the ExampleGen writes


def span_of(artifact: types.Artifact) -> int:
    # ExampleGen writes the span as an int custom property (older TFX: a string); StatisticsGen
    # copies it into its artifact's `span` property.
    if artifact.has_custom_property(SPAN):
        text = artifact.get_string_custom_property(SPAN)
        return int(text) if text else artifact.get_int_custom_property(SPAN)
    return int(getattr(artifact, SPAN, 0) or 0) if SPAN in artifact.PROPERTIES else 0


def latest_spans(artifacts: list[types.Artifact], num_spans: int) -> list[types.Artifact]:
    """The newest artifact (highest id) of each of the `num_spans` newest spans, newest span first."""
    if num_spans < 1:
        raise ValueError(f"num_spans must be at least 1, got {num_spans}")
    by_span: dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = span_of(artifact)
        if span not in by_span or artifact.id > by_span[span].id:
            by_span[span] = artifact
    return [by_span[s] for s in sorted(by_span, reverse=True)[:num_spans]]


class LatestSpansStrategy(resolver.ResolverStrategy):
    """Resolver inputs `newest` (this run's Examples) and `examples` (all of the ExampleGen's)."""

    def __init__(self, num_spans: int):
        self._num_spans = int(num_spans)

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        newest = input_dict.get(NEWEST_KEY, [])
        ingested = [a for a in input_dict.get(EXAMPLES_KEY, []) if a.has_custom_property(FINGERPRINT)]
        live = {a.id: a for a in [*ingested, *newest]}
        window = latest_spans(list(live.values()), self._num_spans)
        if newest and newest[0].id not in {a.id for a in window}:
            raise RuntimeError(
                f"this run's examples (span {span_of(newest[0])}) are older than the {self._num_spans} newest "
                f"spans already ingested ({[span_of(a) for a in window]}): a span folder was removed or renamed"
            )
        return {EXAMPLES_KEY: window, NEWEST_KEY: newest}


class EarlierReportsStrategy(resolver.ResolverStrategy):
    """What the newest data is checked for drift against: the DriftReports (each holding the
    statistics of one run's data) of the `num_spans` newest spans before this run's span, one per
    span (the newest); without spans (every span 0), the newest report of other data than this run's.

    Inputs: `newest` (this run's ExampleGen output: its span, and the dependency) and `reports`
    (every DriftReport of the pipeline). A re-run whose ExampleGen is a cache hit resolves the same
    reports, so the drift check is a cache hit too."""

    def __init__(self, num_spans: int):
        self._num_spans = max(int(num_spans), 1)

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        newest = input_dict.get(NEWEST_KEY, [])
        if not newest:
            return {REPORTS_KEY: [], NEWEST_KEY: []}
        current = newest[0]
        others = [
            r for r in input_dict.get(REPORTS_KEY, []) if r.get_string_custom_property(EXAMPLES_URI) != current.uri
        ]
        if span_of(current) > 0:
            earlier = latest_spans([r for r in others if span_of(r) < span_of(current)], self._num_spans)
        else:
            earlier = sorted(others, key=lambda r: r.id)[-1:]
        return {REPORTS_KEY: earlier, NEWEST_KEY: newest}
