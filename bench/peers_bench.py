"""Change detection, side by side: this tool against bare git, a Python floor and Turborepo.

    python bench/peers_bench.py [--sizes small,medium,large] [--repeat 7] [--no-turbo]

For each size (components / files / changed paths) it builds a synthetic monorepo: N
components, each a directory with a Dockerfile, a package.json and sources; one rule per
component (``build_image:<name>``); a docs skip rule; a commit range that changes the given
number of files spread over the components and the docs. Every tool answers the same
question about the same range, as a whole process, and the script prints median wall times:

* ``git diff``: ``git diff --name-status -z BASE HEAD`` alone;
* ``python floor``: ``python -c`` that runs the same git diff through subprocess and reads
  its output (what any Python tool must pay);
* ``plan --format json``: ``python -m orchestrator plan --base BASE --format json``;
* ``turbo ls --affected``: Turborepo 2 (installed from the npm registry into a cache folder),
  with ``TURBO_SCM_BASE``/``TURBO_SCM_HEAD`` set to the same range.

It also checks that this tool and turbo chose the same components, prints the ratios the
README quotes, and, with ``--curve``, how the plan's time grows with changed paths and with
rules. ``--dry-run`` on this repository is compared with ``python -c pass`` plus ``git diff``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CT_BENCH_CACHE", Path(tempfile.gettempdir()) / "ct-bench-cache"))
SIZES = {
    "small": (30, 3_000, 100),
    "medium": (300, 49_000, 10_000),
    "large": (1_000, 100_000, 20_000),
}
ENV = {  # as a user's shell has it: bytecode cached, no CI variables, this checkout's code
    **{
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "CI")) and k != "PYTHONDONTWRITEBYTECODE"
    },
    "PYTHONPATH": str(PROJECT),
    "GIT_CONFIG_NOSYSTEM": "1",
    "TURBO_TELEMETRY_DISABLED": "1",
    "DO_NOT_TRACK": "1",
    "NO_COLOR": "1",
}


@dataclass(frozen=True)
class Repo:
    path: Path
    base: str
    head: str
    components: int
    files: int
    changed: int
    changed_components: frozenset[str]


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {**ENV, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}  # fmt: skip
    out = subprocess.run(["git", "-C", str(repo), *args], input=input, env=env,
                         capture_output=True, check=True).stdout  # fmt: skip
    return out.decode().strip()


def build_repo(
    root: Path, components: int, files: int, changed: int, rules: int | None = None
) -> Repo:
    """The synthetic monorepo, written with git fast-import (seconds even at 100k files)."""
    rules = components if rules is None else rules
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    per = max(1, (files - 10) // components - 3)
    names = [f"c{i:04d}" for i in range(components)]
    tree: dict[str, bytes] = {
        "package.json": json.dumps(
            {"name": "bench", "private": True, "workspaces": ["packages/*"],
             "packageManager": "npm@10.9.0"}
        ).encode(),
        "package-lock.json": json.dumps(
            {"name": "bench", "lockfileVersion": 3, "packages": {}}
        ).encode(),
        "turbo.json": json.dumps({"$schema": "https://turbo.build/schema.json",
                                  "tasks": {"build": {}}}).encode(),
    }  # fmt: skip
    for name in names:
        base = f"packages/{name}"
        tree[f"{base}/package.json"] = json.dumps({"name": name, "version": "0.0.0"}).encode()
        tree[f"{base}/Dockerfile"] = b"FROM scratch\nCOPY . /app\n"
        for j in range(per):
            tree[f"{base}/src/m{j:04d}.py"] = f"x = {j}\n".encode()
    for j in range(10):
        tree[f"docs/page{j}.md"] = b"# docs\n"
    lines = ['version = 1', '[unmatched]', 'do = "all"', '[[rule]]', 'name = "docs"',
             'paths = ["*.md", "docs/"]', 'do = "skip"']  # fmt: skip
    for name in names:
        lines += [f"[components.{name}]", f'context = "packages/{name}"']
    for i in range(rules):
        name = names[i % components]
        lines += ["[[rule]]", f'name = "r{i}"', f'paths = ["packages/{name}/"]',
                  f'do = "build_image:{name}"']  # fmt: skip
    tree["rules.toml"] = ("\n".join(lines) + "\n").encode()
    _commit(root, tree, "base", parent=None)
    base = git(root, "rev-parse", "HEAD")
    # the change: spread over every component's sources (and one docs page), `changed` files
    sources = sorted(p for p in tree if "/src/" in p)
    step = max(1, len(sources) // max(1, changed - 1))
    touched = [*sources[::step][: changed - 1], "docs/page0.md"]
    changes = {p: tree[p] + b"# changed\n" for p in touched}
    _commit(root, changes, "change", parent=base)
    head = git(root, "rev-parse", "HEAD")
    chosen = frozenset(p.split("/")[1] for p in touched if p.startswith("packages/"))
    return Repo(root, base, head, components, len(tree), len(touched), chosen)


def _commit(root: Path, files: dict[str, bytes], message: str, parent: str | None) -> None:
    stream = bytearray(b"commit refs/heads/main\ncommitter b <b@x> 1700000000 +0000\n")
    stream += b"data %d\n%s\n" % (len(message), message.encode())
    if parent:
        stream += f"from {parent}\n".encode()
    for path, data in files.items():
        stream += b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)
    git(root, "fast-import", "--quiet", input=bytes(stream))
    git(root, "reset", "-q", "--hard", "main")


def median_time(argv: Sequence[str], *, cwd: Path, repeat: int, env: dict[str, str]) -> float:
    subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)  # warm caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.decode()[-2000:]}")
    return statistics.median(times)


def install_turbo() -> Path | None:
    binary = CACHE / "node_modules" / ".bin" / "turbo"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--silent", "--prefix", str(CACHE), "turbo@2"],
                          capture_output=True, check=False)  # fmt: skip
    return binary if done.returncode == 0 and binary.exists() else None


def turbo_components(turbo: Path, repo: Repo) -> frozenset[str]:
    env = {**ENV, "TURBO_SCM_BASE": repo.base, "TURBO_SCM_HEAD": repo.head}
    out = subprocess.run([str(turbo), "ls", "--affected", "--output=json"], cwd=repo.path,
                         env=env, capture_output=True, check=True).stdout  # fmt: skip
    data = json.loads(out)
    return frozenset(item["name"] for item in data.get("packages", {}).get("items", []))


def plan_components(repo: Repo) -> frozenset[str]:
    out = subprocess.run([*PLAN, "--base", repo.base], cwd=repo.path, env=ENV,
                         capture_output=True, check=True).stdout  # fmt: skip
    actions = json.loads(out)["actions"]
    return frozenset(a["target"] for a in actions if a["kind"] == "build_image")


PLAN = [sys.executable, "-m", "orchestrator", "plan", "--format", "json"]
FLOOR = [sys.executable, "-c",
         "import subprocess, sys; "
         "out = subprocess.run(['git', 'diff', '--name-status', '-z', sys.argv[1], sys.argv[2]], "
         "capture_output=True, check=True).stdout; out.split(b'\\0')"]  # fmt: skip


def measure(repo: Repo, repeat: int, turbo: Path | None) -> dict[str, float]:
    rng = [repo.base, repo.head]
    times = {
        "git diff": median_time(["git", "diff", "--name-status", "-z", *rng], cwd=repo.path,
                                repeat=repeat, env=ENV),
        "python floor": median_time([*FLOOR, *rng], cwd=repo.path, repeat=repeat, env=ENV),
        "plan": median_time([*PLAN, "--base", repo.base], cwd=repo.path, repeat=repeat, env=ENV),
    }  # fmt: skip
    if turbo is not None:
        env = {**ENV, "TURBO_SCM_BASE": repo.base, "TURBO_SCM_HEAD": repo.head}
        times["turbo"] = median_time([str(turbo), "ls", "--affected"], cwd=repo.path,
                                     repeat=repeat, env=env)  # fmt: skip
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-turbo", action="store_true")
    parser.add_argument(
        "--curve", action="store_true", help="also time growth with changes and rules"
    )
    args = parser.parse_args(argv)
    turbo = None if args.no_turbo else install_turbo()
    if turbo is None and not args.no_turbo:
        print("turbo could not be installed from the npm registry; its column is left out")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as tmp:
        for size in args.sizes.split(","):
            components, files, changed = SIZES[size]
            repo = build_repo(Path(tmp) / size, components, files, changed)
            ours = plan_components(repo)
            assert ours == repo.changed_components, "the plan chose other components"
            if turbo is not None:
                theirs = turbo_components(turbo, repo)
                assert theirs == ours, f"turbo chose {len(theirs)}, the plan {len(ours)}"
            rows.append((repo, measure(repo, args.repeat, turbo)))
        print()
        print(table(rows, with_turbo=turbo is not None))
        if args.curve:
            print()
            curve(Path(tmp), args.repeat)
    print()
    dry_run(args.repeat)
    return 0


def table(rows: list[tuple[Repo, dict[str, float]]], *, with_turbo: bool) -> str:
    """The README's table: median wall times and the two ratios the goals are stated in."""
    head = ["size (components / files / changed)", "git diff", "python floor",
            "plan --format json", "plan / floor"]  # fmt: skip
    if with_turbo:
        head += ["turbo ls --affected", "plan / turbo"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for repo, t in rows:
        cells = [
            f"{repo.components} / {repo.files:,} / {repo.changed:,}",
            *(f"{t[k] * 1000:.0f} ms" for k in ("git diff", "python floor", "plan")),
            f"{t['plan'] / t['python floor']:.2f}x",
        ]
        if with_turbo:
            cells += [f"{t['turbo'] * 1000:.0f} ms", f"{t['plan'] / t['turbo']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve(tmp: Path, repeat: int) -> None:
    """Time against changed paths (1,000 rules) and against rules (20,000 changed)."""
    print(
        "| files | changed | rules | components | plan --format json | beyond the floor, per path |"
    )
    print("|---|---|---|---|---|---|")
    points = [(100_000, c, 1_000, 1_000) for c in (1_000, 5_000, 10_000, 20_000)]
    points += [(100_000, 20_000, r, 1_000) for r in (10, 100)]
    for index, (files, changed, rules, components) in enumerate(points):
        repo = build_repo(tmp / f"curve{index}", components, files, changed, rules=rules)
        took = median_time([*PLAN, "--base", repo.base], cwd=repo.path, repeat=repeat, env=ENV)
        floor = median_time([*FLOOR, repo.base, repo.head], cwd=repo.path, repeat=repeat, env=ENV)
        per = (took - floor) / changed * 1e6
        print(f"| {files:,} | {changed:,} | {rules:,} | {components:,} | {took * 1000:.0f} ms "
              f"| {per:.1f} µs |")  # fmt: skip


def dry_run(repeat: int) -> None:
    """``--dry-run`` on this repository against ``python -c pass`` plus ``git diff``."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    dry = median_time([sys.executable, "-m", "orchestrator", "--dry-run", "--format", "json"],
                      cwd=PROJECT, repeat=repeat, env=ENV)  # fmt: skip
    bare = median_time([sys.executable, "-c", "pass"], cwd=PROJECT, repeat=repeat, env=ENV)
    diff = median_time(["git", "diff", "--name-status", "-z", f"{head}^", head], cwd=PROJECT,
                       repeat=repeat, env=ENV)  # fmt: skip
    print(f"--dry-run on this repository: {dry * 1000:.0f} ms; python -c pass "
          f"{bare * 1000:.0f} ms + git diff {diff * 1000:.0f} ms = {(bare + diff) * 1000:.0f} ms; "
          f"ratio {dry / (bare + diff):.2f}x")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
