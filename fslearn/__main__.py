"""``python -m fslearn …`` is the ``fslearn`` command."""

import sys

from .cli import main

sys.exit(main())
