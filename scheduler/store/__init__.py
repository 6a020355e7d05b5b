"""The store: SQLAlchemy Core over SQLite; nobody outside this package writes SQL.

See :mod:`scheduler.store.engine` for the layout (one query module per concern).
"""

from scheduler.store.engine import *  # noqa: F403
from scheduler.store.engine import __all__  # noqa: F401
