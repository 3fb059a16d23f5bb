"""``python -m control.delivery_log``: the same as ``webhook-recorder``."""

from cli.recorder import main

raise SystemExit(main())
