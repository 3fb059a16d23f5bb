"""``python -m producer``: the same as ``webhook-publish``."""

import sys

from producer.cli import main

sys.exit(main())
