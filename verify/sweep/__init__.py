"""Sweeps: configurations expanded into tasks, run on an executor, kept in a result store."""

from verify.sweep.config import (  # public names of the old module path
    CHUNK_SECONDS,
    MAX_CHUNK,
    MAX_CONFIG_BYTES,
    MAX_TASKS,
    SweepAborted,
    SweepConfig,
    SweepConfigError,
    SweepSummary,
    Task,
    check_task_count,
    config_hash,
    count_tasks,
    expand,
    iter_tasks,
    load_config,
    parse_config,
)
from verify.sweep.runner import (
    open_sweep_store,
    run_sweep,
)

__all__ = [
    "CHUNK_SECONDS",
    "MAX_CHUNK",
    "MAX_CONFIG_BYTES",
    "MAX_TASKS",
    "SweepAborted",
    "SweepConfig",
    "SweepConfigError",
    "SweepSummary",
    "Task",
    "check_task_count",
    "config_hash",
    "count_tasks",
    "expand",
    "iter_tasks",
    "load_config",
    "parse_config",
    "open_sweep_store",
    "run_sweep",
]
