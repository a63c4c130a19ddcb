"""Compile the pipeline for Vertex AI / Kubeflow with the given component images.

    python -m pipeline.compile --image validator=URI --image evaluator=URI \
        [--image trainer=URI] --output spec.yaml

Deterministic: the same images give byte-identical YAML. Exit 2 with one clear sentence when
a required image is missing, a name is unknown, or an argument is malformed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.definition import (
    OPTIONAL_IMAGES,
    REQUIRED_IMAGES,
    build_pipeline,
    container_components,
)


class CompileError(ValueError):
    """The inputs of a compile are unusable; the message is one sentence."""


def check_images(images: Mapping[str, str]) -> dict[str, str]:
    known = set(REQUIRED_IMAGES) | set(OPTIONAL_IMAGES)
    unknown = sorted(set(images) - known)
    if unknown:
        raise CompileError(
            f"unknown component(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    missing = [name for name in REQUIRED_IMAGES if not images.get(name)]
    if missing:
        raise CompileError(f"no image given for component(s) {', '.join(missing)}")
    bad = sorted(
        name for name, uri in images.items() if not uri or uri != uri.strip() or " " in uri
    )
    if bad:
        raise CompileError(f"image reference for {', '.join(bad)} is empty or has whitespace")
    return dict(images)


def compile_pipeline(images: Mapping[str, str], output: Path) -> None:
    """Write the pipeline spec YAML for these component images to ``output``."""
    from kfp import compiler

    checked = check_images(images)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(container_components(checked)), str(output))


def parse_image_args(values: Sequence[str]) -> dict[str, str]:
    images: dict[str, str] = {}
    for value in values:
        name, sep, uri = value.partition("=")
        if not sep or not name:
            raise CompileError(f"--image expects NAME=URI, got {value!r}")
        if name in images:
            raise CompileError(f"--image {name} given twice")
        images[name] = uri
    return images


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", action="append", default=[], metavar="NAME=URI")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        compile_pipeline(parse_image_args(args.image), args.output)
    except CompileError as error:
        print(f"pipeline.compile: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"pipeline.compile: cannot write {args.output}: {error}", file=sys.stderr)
        return 2
    print(f"pipeline.compile: wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
