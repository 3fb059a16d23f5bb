"""``python -m worker run`` with the subscriber file's size limit raised, and nothing else changed.

The subscriber file reader refuses a document of more than
``config.yaml_reader.MAX_VALUES`` (100,000) YAML values, keys included: about
8,300 subscribers of five fields.  Only the endpoint store holds more.  When
the workers in this tree cannot read the store, ``bench.control_plane`` starts
its 10,000-endpoint worker through this module so that the start-up is still
measured; the run's output says so.
"""

from __future__ import annotations

import config.yaml_reader
from cli.worker import main

config.yaml_reader.MAX_VALUES = 10_000_000
raise SystemExit(main(["run"]))
