"""Change-detection build orchestrator for ML continuous training."""

__version__ = "0.1.0"
