"""Shared fixtures. Those that start real local services live in tests/fixtures/, a module each."""

pytest_plugins: list[str] = [
    "tests.fixtures.gcs",
    "tests.fixtures.gitrepo",
    "tests.fixtures.pubsub",
    "tests.fixtures.cloudbuild_server",
    "tests.fixtures.functions",
    "tests.fixtures.docker",
    "tests.fixtures.faultproxy",
]
