"""schedctl: run a project's pytest suite in tiers, on a schedule, on GPU machines."""

# Static, so that start-up does not pay for importlib.metadata; a test keeps it equal to the
# version in pyproject.toml.
__version__ = "0.1.0"
