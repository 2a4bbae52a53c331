"""``python -m htpdata`` is the ``htpdata`` command."""

import sys

from .cli.main import main

sys.exit(main())
