"""Connectors: move care-plan, measure and consent data between vendor systems and Stafett.

A runtime in the spirit of Kafka Connect (`connectors.runtime`): source connectors pull from a
vendor system with a durable checkpoint and publish to `stafett.inbound`; sink connectors
consume their organisation's `stafett.out.<orgnr>` and push to the vendor system. Retries with
exponential backoff, then the dead-letter topic; pause, resume, restart and status through an
admin API. Mapping between formats is `mapping`'s job; transport is `bus`'s. Nothing here
imports `service`.
"""

from connectors.base import SinkTask, SourceBatch, SourceRecord, SourceTask
from connectors.checkpoints import CheckpointStore, FileCheckpointStore
from connectors.config import ConnectorConfig, ConnectorsFile, load_config
from connectors.runtime import ConnectorRuntime, ConnectorState, ConnectorStatus

__all__ = [
    "CheckpointStore",
    "ConnectorConfig",
    "ConnectorRuntime",
    "ConnectorState",
    "ConnectorStatus",
    "ConnectorsFile",
    "FileCheckpointStore",
    "SinkTask",
    "SourceBatch",
    "SourceRecord",
    "SourceTask",
    "load_config",
]
