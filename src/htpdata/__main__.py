"""``python -m htpdata`` is the ``htpdata`` command."""

from .cli.main import entry

entry()
