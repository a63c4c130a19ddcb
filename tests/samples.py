"""Sample inputs shared by several test modules."""

#: A small rules.toml: one component, a test command, docs skipped, src/ tested.
SMALL_RULES = """\
version = 1

[project]
gcp_project = "demo-project"
region = "us-central1"
bucket = "demo-bucket"
registry = "us-central1-docker.pkg.dev/demo-project/ct"
topic = "training-runs"

[test]
command = ["python", "-c", "print('ok')"]

[components.trainer]
context = "components/trainer"

[[rule]]
name = "docs"
paths = ["*.md"]
do = "skip"

[[rule]]
name = "code"
paths = ["src/"]
do = "test"

[[rule]]
name = "images"
paths = ["components/"]
do = "build_image"
"""
