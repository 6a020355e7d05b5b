"""The store: SQLAlchemy Core over SQLite; nobody outside this package writes SQL."""

from scheduler.store.engine import *  # noqa: F403
from scheduler.store.engine import __all__  # noqa: F401
