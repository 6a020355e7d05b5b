"""The project under test at an exact commit: git mirror, ref resolution, per-run worktrees.

- :mod:`scheduler.source.core`: :class:`Source`, what the dispatcher calls.
- :mod:`scheduler.source.mirror`: :class:`Mirror`, the bare mirror of ``project.repo``.
- :mod:`scheduler.source.checkout`: :class:`Checkout`, one run's tree and its provenance.
- :mod:`scheduler.source.git`: the only place that runs git or touches its files; subprocess and
  OS errors become :class:`~scheduler.kernel.errors.SourceError` there.
"""

from __future__ import annotations

from scheduler.source.checkout import Checkout
from scheduler.source.core import Source

__all__ = ["Checkout", "Source"]
