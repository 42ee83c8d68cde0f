"""``python -m romelib.datasets.download [NAME ...] [--mirror URL]``: see :func:`romelib.datasets.download.main`."""
import sys

from . import main

sys.exit(main())
