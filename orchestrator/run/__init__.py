"""Executors: the step functions (``steps``), the local executor, the Cloud Build executor."""
