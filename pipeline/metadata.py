"""A local run's ML Metadata store (SQLite), opened read-only: what the summary, the report, the
schema export and the skew check read back."""

from __future__ import annotations

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def read_only_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The MLMD store at `metadata_path` (a SQLite file), read-only: a reader never changes it."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)
