"""``python -m wa_middleware.cli``: the ``wa-middleware`` command."""

import sys

from . import main

sys.exit(main())
