"""The [WYL24] room: checkers of the LoRA-GA claims and the WYL-speed comparison."""

from verify.wyl import checkers
from verify.wyl.checkers import *  # noqa: F403  (the room's public names are those of its modules)
from verify.wyl.speed import DEFAULT_LRS, SpeedRun, check_wyl_speed, speed_runs, speed_table

__all__ = [*checkers.__all__, "SpeedRun", "speed_runs", "speed_table", "check_wyl_speed", "DEFAULT_LRS"]
