"""The event log, below the task model: the TaskEvent table, its reads and writes, and the
EventStream a run writes through. Nothing here imports ``streamapp.models``."""
