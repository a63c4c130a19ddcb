"""Replaying real change histories, and an independent reading of the README's semantics.

``../shared/replay/*.jsonl`` holds, per commit of three public ML CI/CD repositories, its
parents and its changed paths. :func:`replay` rebuilds a history as a real git repository
(same DAG, merges included; file contents made up but unique, so git sees exactly the
recorded changes). :func:`readme_actions` plans one commit the way the README describes it,
with git itself deciding what each pattern matches (``git check-ignore``) and nothing from
``orchestrator`` but what it is compared against; ``bench/replay/<name>.toml`` describe the
three layouts. ``bench/replay_figures.py`` prints the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gitcheck import GitIgnoreOracle

PROJECT = Path(__file__).resolve().parents[1]
REPLAY = PROJECT.parent / "shared" / "replay"
RULES_DIR = PROJECT / "bench" / "replay"
HISTORIES = sorted(REPLAY.glob("*.jsonl")) if REPLAY.is_dir() else []


def load(history: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in history.read_text().splitlines() if line.strip()]


def replay(commits: list[dict[str, Any]], root: Path) -> dict[str, str]:
    """Build the history with git fast-import; returns recorded sha -> replayed sha."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    marks: dict[str, int] = {}
    stream = bytearray()
    for number, commit in enumerate(commits, start=1):
        marks[commit["sha"]] = number
        stream += f"commit refs/heads/main\nmark :{number}\n".encode()
        stream += f"committer r <r@example.com> {1600000000 + number} +0000\n".encode()
        stream += f"data {len(commit['sha'])}\n{commit['sha']}\n".encode()
        parents = [p for p in commit["parents"] if p in marks]
        if parents:
            stream += f"from :{marks[parents[0]]}\n".encode()
            stream += b"".join(f"merge :{marks[p]}\n".encode() for p in parents[1:])
        else:
            stream += b"deleteall\n"
        for change in commit["changes"]:
            path = change["path"]
            quoted = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if change["status"] == "D":
                stream += f"D {quoted}\n".encode()
            else:
                data = f"{commit['sha']} {path}\n".encode()
                stream += f"M 100644 inline {quoted}\ndata {len(data)}\n".encode() + data + b"\n"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    marks_file = root / ".git" / "replay-marks"
    subprocess.run(
        ["git", "fast-import", "--quiet", f"--export-marks={marks_file}"],
        cwd=root,
        input=bytes(stream),
        check=True,
        env=env,
    )
    by_mark = dict(line.split() for line in marks_file.read_text().splitlines())
    return {sha: by_mark[f":{number}"] for sha, number in marks.items()}


def files_at(repo: Path, sha: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", sha],
        check=True,
        capture_output=True,
    ).stdout
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def touched(commit: Mapping[str, Any]) -> list[str]:
    """Every path a recorded commit touched (a rename counts for both of its paths)."""
    paths = [c["path"] for c in commit["changes"]]
    paths += [c["old_path"] for c in commit["changes"] if c.get("old_path")]
    return list(dict.fromkeys(paths))


# -- the README, read independently ---------------------------------------------------------

SINGLETONS = ("test", "upload_source", "compile_pipeline", "deploy_function")


@dataclass(frozen=True)
class ReadmeRules:
    """rules.toml as the README's reference describes it (read with tomllib, nothing else)."""

    rules: list[tuple[str, list[str], list[str]]]  # name, patterns, do
    contexts: dict[str, str]  # component -> context ("" for the root)
    has_test: bool
    unmatched: str

    @classmethod
    def read(cls, path: Path) -> ReadmeRules:
        data = tomllib.loads(path.read_text())
        rules = []
        for rule in data.get("rule", []):
            paths = rule["paths"] if isinstance(rule["paths"], list) else [rule["paths"]]
            do = rule["do"] if isinstance(rule["do"], list) else [rule["do"]]
            rules.append((rule["name"], paths, do))
        contexts = {
            name: "/".join(p for p in body["context"].split("/") if p not in ("", "."))
            for name, body in data.get("components", {}).items()
        }
        return cls(rules, contexts, "test" in data, data.get("unmatched", {}).get("do", "all"))

    @property
    def patterns(self) -> list[str]:
        return list(dict.fromkeys(p for _, paths, _ in self.rules for p in paths))


def pattern_verdicts(
    oracle: GitIgnoreOracle, patterns: Iterable[str], paths: Sequence[str]
) -> dict[str, dict[str, bool]]:
    """pattern -> path -> whether git ignores the path under that one pattern (negations are
    asked without their '!': the README says a negation excludes what the pattern matches)."""
    verdicts = {}
    for pattern in patterns:
        positive = pattern[1:] if pattern.startswith("!") else pattern
        verdicts[pattern] = {p: v.ignored for p, v in oracle.check([positive], paths).items()}
    return verdicts


def _holds(context: str, path: str) -> bool:
    return not context or path == context or path.startswith(context + "/")


def everything(rules: ReadmeRules, files_at_head: Sequence[str]) -> set[str]:
    """What ``all`` plans: every component image (whose context exists), each singleton some
    rule names, publish, and test when [test] is there. A CI without change detection runs
    this on every commit."""
    existing = _existing(rules, files_at_head)
    named = {d.partition(":")[0] for _, _, do in rules.rules for d in do}
    actions = {f"build_image:{c}" for c in existing} | {"publish"}
    actions |= {k for k in SINGLETONS if k in named}
    return _implied(actions, rules.has_test)


def _implied(actions: set[str], has_test: bool) -> set[str]:
    """The README's table of what each action implies."""
    if any(a.startswith("build_image:") for a in actions):
        actions.add("compile_pipeline")
    if actions & {"compile_pipeline", "upload_source"}:
        actions.add("publish")
    if actions and has_test:
        actions.add("test")
    return actions


def _existing(rules: ReadmeRules, files_at_head: Sequence[str]) -> set[str]:
    return {c for c, ctx in rules.contexts.items() if any(_holds(ctx, f) for f in files_at_head)}


def readme_actions(
    rules: ReadmeRules,
    paths: Sequence[str],
    verdicts: Mapping[str, Mapping[str, bool]],
    files_at_head: Sequence[str],
) -> set[str]:
    """The action ids the README's rules give for ``paths`` changed at a head with these files."""
    existing = _existing(rules, files_at_head)
    actions: set[str] = set()
    for path in paths:
        hits = []
        for _name, patterns, do in rules.rules:
            matching = [p for p in patterns if verdicts[p][path]]
            if matching and not matching[-1].startswith("!"):  # the last matching decides
                hits.append(do)
        if not hits:
            if rules.unmatched == "all":
                actions |= everything(rules, files_at_head)
            continue
        for do in hits:
            for directive in do:
                kind, _, target = directive.partition(":")
                if kind == "all":
                    actions |= everything(rules, files_at_head)
                elif kind == "retrain":
                    actions.add("publish")
                elif kind == "build_image" and target:
                    actions |= {directive} if target in existing else set()
                elif kind == "build_image":
                    actions |= {
                        f"build_image:{c}"
                        for c, ctx in rules.contexts.items()
                        if c in existing and _holds(ctx, path)
                    }
                elif kind != "skip":
                    actions.add(kind)
    return _implied(actions, rules.has_test)
