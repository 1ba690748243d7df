"""Sweeps: configurations expanded into tasks, run on an executor, kept in a result store."""

from verify.sweep import config, runner
from verify.sweep.config import *  # noqa: F403  (the package's public names are those of its modules)
from verify.sweep.config import CHUNK_SECONDS, MAX_CHUNK, MAX_CONFIG_BYTES, MAX_TASKS  # old module path
from verify.sweep.runner import *  # noqa: F403

__all__ = ["CHUNK_SECONDS", "MAX_CHUNK", "MAX_CONFIG_BYTES", "MAX_TASKS", *config.__all__, *runner.__all__]
