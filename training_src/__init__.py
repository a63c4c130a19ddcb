"""Training code for the example workload: digits (or a CSV) -> scikit-learn MLP -> metrics.

Uploaded to the bucket as a gzip tarball at build time and run from an unpacked copy by the
pipeline's train step (``python -m training_src ...``). Needs numpy and scikit-learn; reading a
``gs://`` URI needs google-cloud-storage unless ``ORCHESTRATOR_LOCAL_BUCKET_ROOT`` is set.
"""
