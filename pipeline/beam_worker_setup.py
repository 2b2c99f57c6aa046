"""Beam worker bootstrap: lets tfdv 1.16.1 import against tfx-bsl 1.21 in every Beam worker process.

tensorflow-data-validation 1.16.1 (the newest Linux cp311 wheel) does `from tfx_bsl.arrow import
sql_util` at import time, and tfx-bsl 1.21 no longer ships that ZetaSQL-backed module. TFX's own
`tfx/__init__.py` and `tfx/components/__init__.py` patch `sys.modules` with a stand-in, but only in
the process that imports TFX. A Beam worker in another process (DirectRunner `multi_processing`,
Flink, Spark, Dataflow) unpickles a tfdv DoFn, imports `tensorflow_data_validation` directly and dies.

Beam's worker entry point (`apache_beam.runners.worker.sdk_worker_main`) imports every module named by
`--beam_plugins` before it unpickles any user code, in every SDK worker process on every portable
runner. `pipeline.beam_args.with_worker_setup` adds this module there, and importing it installs the
stand-in. The `WorkerSetup` BeamPlugin subclass also makes the Dataflow runner add it on its own.

The stand-in is explicit rather than a MagicMock: tfdv and TFMA only touch `sql_util` for SQL-based
slicing, which this project does not use; if something ever does, it fails loudly instead of
silently computing nothing.
"""

from __future__ import annotations

import importlib
import sys
import types

from apache_beam.utils.plugin import BeamPlugin

SQL_UTIL_MODULE = "tfx_bsl.arrow.sql_util"


class RecordBatchSQLSliceQuery:
    """Placeholder for tfx-bsl's ZetaSQL slice query, which tfx-bsl 1.21 removed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            "SQL-based slicing needs tfx_bsl.arrow.sql_util (ZetaSQL), which tfx-bsl 1.21 removed; "
            "use feature-key slicing instead"
        )


def install_sql_util_stand_in() -> bool:
    """Register a `tfx_bsl.arrow.sql_util` stand-in unless an importable one exists. True if installed."""
    try:
        importlib.import_module(SQL_UTIL_MODULE)
        return False
    except ImportError:
        pass
    module = types.ModuleType(SQL_UTIL_MODULE, "waferflow stand-in: ZetaSQL slicing is not available.")
    module.RecordBatchSQLSliceQuery = RecordBatchSQLSliceQuery
    sys.modules[SQL_UTIL_MODULE] = module
    # `from tfx_bsl.arrow import sql_util` looks at the package attribute first.
    parent = importlib.import_module(SQL_UTIL_MODULE.rpartition(".")[0])
    parent.sql_util = module
    return True


class WorkerSetup(BeamPlugin):
    """Marks this module as a Beam plugin, so runners that collect plugins import it on workers."""


install_sql_util_stand_in()
