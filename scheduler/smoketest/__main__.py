"""``python -m scheduler.smoketest``: the built-in DDP smoketest, run under torchrun."""

from __future__ import annotations

import sys

from scheduler.smoketest.train import main

if __name__ == "__main__":
    sys.exit(main())
