"""``python -m producer``: the same as ``webhook-publish``."""

import sys

from cli.publish import main

sys.exit(main())
