"""Planning speed, as ratios against baselines measured in the same run.

1. A synthetic repository (default 50,000 files; a commit touching 10,000 of them; 300 rules):
   the whole plan (rules.toml load, git diff, parse, match, plan), in process, against bare
   ``git diff --name-status -z`` on the same commits, run as a subprocess.
2. ``python -m orchestrator --dry-run`` on this repository against ``python -c pass``.
3. Which heavy modules ``--dry-run`` imports (``python -X importtime``): none are allowed.

Run: ``python bench/plan_bench.py`` (``--files``, ``--touched``, ``--rules``, ``--repeat``).
Prints figures only; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.workflow import Target, make_plan  # noqa: E402

HEAVY = ("kfp", "google", "docker", "sklearn", "grpc", "numpy")


def file_path(i: int) -> str:
    """100 services x 20 modules: 2,000 directories of 25 files, four kinds of file."""
    return f"services/s{i % 100}/mod{(i // 100) % 20}/f{i}.{('py', 'md', 'txt', 'yaml')[i % 4]}"


def make_repo(root: Path, files: int, touched: int) -> tuple[str, str]:
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    step = max(1, files // touched)
    changed = set(range(0, files, step)[:touched])
    stream = bytearray()
    for rev in range(2):
        stream += f"commit refs/heads/main\ncommitter b <b@b> {1700000000 + rev} +0000\n".encode()
        stream += f"data 2\nc{rev}\n".encode()
        for i in range(files):
            if rev == 0 or i in changed:
                data = f"file {i} revision {rev}\n".encode()
                stream += f"M 644 inline {file_path(i)}\ndata {len(data)}\n".encode() + data + b"\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=bytes(stream), check=True)
    head = subprocess.run(
        ["git", "rev-parse", "main", "main^"], cwd=root, capture_output=True, check=True
    ).stdout.split()
    return head[1].decode(), head[0].decode()


def make_rules(path: Path, count: int) -> None:
    """A realistic mix: directory rules, extension globs, negations, wildcard anchored rules."""
    lines = ["version = 1", "[unmatched]", 'do = "all"', "[test]", 'command = ["true"]']
    for s in range(20):
        lines += [f"[components.c{s}]", f'context = "services/s{s}"']
    shapes = [
        lambda n: ([f"services/s{n % 100}/"], "build_image" if n % 100 < 20 else "upload_source"),
        lambda n: (
            [f"services/s{n % 100}/mod{n % 20}/", f"!services/s{n % 100}/mod{n % 20}/*.md"],
            "test",
        ),
        lambda n: ([f"*.{('md', 'rst', 'adoc')[n % 3]}", "docs/"], "skip"),
        lambda n: ([f"services/s{n % 100}/*/**/f{n % 10}*.yaml"], "compile_pipeline"),
        lambda n: ([f"/services/s{n % 100}/mod{n % 20}/f{n}.py"], "retrain"),
        lambda n: ([f"mod{n % 20}/"], "deploy_function"),
    ]
    for n in range(count):
        patterns, action = shapes[n % len(shapes)](n)
        quoted = ", ".join(f'"{p}"' for p in patterns)
        lines += ["[[rule]]", f'name = "r{n}"', f"paths = [{quoted}]", f'do = "{action}"']
    path.write_text("\n".join(lines) + "\n")


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the page cache and git's object store
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--touched", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        repo = Path(tmp) / "repo"
        base, head = make_repo(repo, args.files, args.touched)
        rules = Path(tmp) / "rules.toml"
        make_rules(rules, args.rules)
        env = {"PATH": os.environ.get("PATH", "")}

        def bare_diff() -> None:
            subprocess.run(
                ["git", "diff", "--name-status", "-z", base, head],
                cwd=repo, stdout=subprocess.DEVNULL, check=True,
            )  # fmt: skip

        target = Target(repo=repo, rules_path=rules, base=base, head=head)
        _, plan = make_plan(target, env)
        git_s = median_seconds(bare_diff, args.repeat)
        plan_s = median_seconds(lambda: make_plan(target, env), args.repeat)
        print(
            f"synthetic repo: {args.files} files, {len(plan.changes)} changed, "
            f"{args.rules} rules -> {len(plan.actions)} actions"
        )
        print(f"  bare git diff --name-status -z : {git_s * 1000:8.1f} ms")
        print(f"  orchestrator plan (in process) : {plan_s * 1000:8.1f} ms")
        print(f"  ratio plan / git diff          : {plan_s / git_s:8.2f}x  (target <= 2x)")

    python = sys.executable
    dry_run = [python, "-m", "orchestrator", "--dry-run", "--repo", str(ROOT), "--format", "json"]

    def run_dry() -> None:
        subprocess.run(dry_run, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)

    def run_pass() -> None:
        subprocess.run([python, "-c", "pass"], stdout=subprocess.DEVNULL, check=True)

    pass_s = median_seconds(run_pass, args.repeat)
    dry_s = median_seconds(run_dry, args.repeat)
    print("this repository:")
    print(f"  python -c pass                 : {pass_s * 1000:8.1f} ms")
    print(f"  python -m orchestrator --dry-run: {dry_s * 1000:7.1f} ms")
    print(f"  ratio                          : {dry_s / pass_s:8.2f}x")

    trace = subprocess.run(
        [python, "-X", "importtime", *dry_run[1:]], cwd=ROOT, capture_output=True, text=True
    ).stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in trace.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    heavy = sorted(m for m in imported if m in HEAVY)
    print(f"  heavy modules imported by --dry-run: {', '.join(heavy) or 'none'}")
    return 1 if heavy else 0


if __name__ == "__main__":
    raise SystemExit(main())
