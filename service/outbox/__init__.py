"""The transactional outbox: change events written with the change, published by a relay.

Every committed write of a child's log also stores an outbox row in the same database
transaction (`Outbox.add`); `OutboxRelay` publishes unsent rows to the bus in order and marks
them sent. The database stays the system of record: a broker outage only grows the backlog,
and a crash between publishing and marking resends (consumers deduplicate by event id).
"""

from service.outbox.events import change_event
from service.outbox.relay import OutboxRelay, RelayStats
from service.outbox.writer import Outbox, backlog

__all__ = ["Outbox", "OutboxRelay", "RelayStats", "backlog", "change_event"]
