"""The KFP v2 pipeline of the example workload: validate -> train -> evaluate -> register.

- ``pipeline.definition``: the pipeline graph, built from container components (compiled for
  Vertex AI / Kubeflow) or from lightweight components (local runs without Docker).
- ``pipeline.compile``: ``compile_pipeline(images, output)`` and ``python -m pipeline.compile``.
- ``pipeline.local_run``: run the pipeline on this machine with ``kfp.local``.
- ``pipeline.source``: the deterministic tarball of ``training_src/`` that builds upload.
- ``pipeline/fetch_and_train.py``: the train step's bootstrap (fetch, unpack, run the source).
"""
