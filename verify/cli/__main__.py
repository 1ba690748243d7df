"""``python -m verify.cli``: the command line, without the console script's OpenMP setting.

Importing the package loads torch before this module runs, so OpenMP's wait settings made here
would come too late; ``loracheck`` and ``python -m _loracheck`` make them first (:mod:`_loracheck`).
"""

import sys

from verify.cli.main import main

sys.exit(main())
