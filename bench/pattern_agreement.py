"""How often rules.toml patterns decide exactly as git does.

    python bench/pattern_agreement.py [--rules 2000] [--seed 1]

Draws random pattern lists over the whole gitignore syntax (the vocabulary of
tests/test_gitignore.py: anchors, trailing '/', '**' everywhere, '*', '?', brackets with
ranges, negation and POSIX classes, escapes, dotfiles, unicode, spaces) and random paths,
and compares, for every (rule, path), the matcher's verdict with
``git check-ignore --no-index`` given the same lines as a .gitignore. Prints how many agree,
how many differ only by the README's documented deviation (a later negation counts under a
directory git had already excluded), and how many differ otherwise (which must be none).
Patterns that git before 2.52 misreads (``foo**/bar``) are counted apart on such a git.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.gitignore import compile_pattern
from orchestrator.matching import Matcher
from orchestrator.model import Directive, Rule
from tests.gitcheck import GitIgnoreOracle, old_git_prefix_bug
from tests.test_gitignore import NAMES, TOKENS, _positive


def _pattern(rng: random.Random) -> str:
    segments = [
        "".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 3)))
        for _ in range(rng.randint(1, 4))
    ]
    body = "/".join(segments)
    body = ("/" if rng.random() < 0.5 else "") + body + ("/" if rng.random() < 0.5 else "")
    return ("!" if rng.random() < 0.25 else "") + body


NEAR_PATTERNS = (
    "a", "b", "a/", "b/", "/a", "a/b", "a/*", "a/**", "**/b", "**/b/", "*.md", "a/**/*.md",
    "x.md", "*", "a/b/", "!a", "!b", "!a/", "!b/", "!a/b", "!a/*", "!a/**", "!**/b",
    "!*.md", "!a/**/*.md", "!x.md", "!*", "!a/b/", "[ab]/", "!?/b", "**/[[:lower:]].md",
)  # fmt: skip
NEAR_NAMES = ("a", "b", "x.md", "c")


def _path(rng: random.Random, names: tuple[str, ...]) -> str:
    return "/".join(rng.choice(names) for _ in range(rng.randint(1, 5)))


def _valid(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=2000, help="pattern lists to draw")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)  # noqa: S311 - reproducible draws, not secrets
    counts = dict.fromkeys(("cases", "same", "deviation", "other", "old-git", "rejected"), 0)
    counts["matched"] = 0
    with tempfile.TemporaryDirectory() as tmp:
        oracle = GitIgnoreOracle(Path(tmp))
        for _ in range(args.rules):
            drawn = [_pattern(rng) for _ in range(rng.randint(1, 5))]
            patterns = [p for p in drawn if _valid(p)]
            counts["rejected"] += len(drawn) - len(patterns)
            if not patterns:
                continue
            near = rng.random() < 0.5  # half the time, a vocabulary where rules and paths meet
            if near:
                patterns = [rng.choice(NEAR_PATTERNS) for _ in range(rng.randint(1, 5))]
            paths = [_path(rng, NEAR_NAMES if near else NAMES) for _ in range(8)]
            if any(old_git_prefix_bug(p) for p in patterns) and oracle.version < (2, 52):
                counts["old-git"] += len(paths)
                continue
            whole = oracle.check(patterns, paths)
            matcher = Matcher([Rule("r", tuple(patterns), (Directive("retrain"),))])
            single = None
            for path in paths:
                counts["cases"] += 1
                ours = bool(matcher.match(path))
                counts["matched"] += whole[path].pattern is not None
                if ours == whole[path].ignored:
                    counts["same"] += 1
                    continue
                if single is None:
                    single = {p: oracle.check([_positive(p)], paths) for p in set(patterns)}
                matching = [p for p in patterns if single[p][path].ignored]
                documented = whole[path].ignored and not ours and matching[-1].startswith("!")
                counts["deviation" if documented else "other"] += 1
    print(f"git {'.'.join(map(str, oracle.version))}, seed {args.seed}")
    print(
        f"{counts['cases']} (rule, path) cases ({counts['matched']} where some pattern "
        f"matched): {counts['same']} identical to git "
        f"({counts['same'] / max(counts['cases'], 1):.2%}), {counts['deviation']} under the "
        f"documented deviation, {counts['other']} other differences"
    )
    print(
        f"({counts['rejected']} drawn patterns were rejected as never matching; "
        f"{counts['old-git']} cases skipped for this git's foo**/bar bug)"
    )
    return 1 if counts["other"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
