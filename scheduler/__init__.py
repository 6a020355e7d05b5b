"""schedctl: run a project's pytest suite in tiers, on a schedule, on GPU machines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("schedctl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
