"""``python -m verify.cli``: the ``loracheck`` command."""

import sys

from verify.cli.main import main

sys.exit(main())
