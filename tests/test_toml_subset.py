"""The rules-file reader without tomllib, against tomllib on generated documents.

Whatever the text, the subset reader either returns exactly what ``tomllib.loads`` returns
or steps aside (and ``loads`` then is tomllib): it never accepts a document tomllib refuses,
and never reads one differently.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import toml_subset
from tests.replaying import RULES_DIR

PROJECT = Path(__file__).resolve().parents[1]

#: mostly what a rules file holds; sometimes what the subset leaves to tomllib, or junk
_GOOD_KEYS = st.sampled_from(["a", "b", "rule", "name", "components", "x-y_1", '"q k"', "'lit'",
                              '""'])  # fmt: skip
KEYS = st.one_of(
    _GOOD_KEYS,
    st.from_regex(r"k[0-9]{1,2}", fullmatch=True),
    st.from_regex(r"k[0-9]{1,2}", fullmatch=True),
    st.sampled_from(["a.b", "1", "é", '"a\\"b"', "a b"]),
)  # fmt: skip
_GOOD_STRINGS = st.sampled_from(
    [
        '"x"',
        "'y'",
        '""',
        '"é # not a comment"',
        "'[1]'",
        '"}"',
        "'{'",
        "\"a = 'b'\"",
        "'c, d'",
        '"="',
    ]
)
STRINGS = st.one_of(
    _GOOD_STRINGS,
    _GOOD_STRINGS,
    _GOOD_STRINGS,
    st.sampled_from(["'it''s'", '"a\\nb"', '"tab\there"', '"unterminated', '"""multi"""',
                     "'''lit'''", '"a", "b"']),
)  # fmt: skip
SCALARS = st.one_of(
    STRINGS,
    STRINGS,
    st.sampled_from(["true", "false", "0", "-0", "+1", "42", "-17"]),
    st.sampled_from(["0.001", "-0.0", "+3.25", "1e3", "1E-04", "6.02e+23", "0.5e2", "1.", ".5",
                     "01.5", "1e", "1.5e", "1_0.5", "1.5_0", "1e1_0", "-inf", "+nan", "1.0e400"]),
    st.sampled_from(["True", "007", "1_000", "0x1f", "inf", "nan", "1979-05-27",
                     "12345678901234567890123"]),
)  # fmt: skip


@st.composite
def values(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 2, 3]))
    if kind == 0:
        return draw(SCALARS)
    if kind == 1:
        items = draw(st.lists(SCALARS, max_size=3))
        trailing = draw(st.sampled_from(["", "", ",", " , "]))
        return "[" + ", ".join(items) + (trailing if items else "") + "]"
    if kind == 2:
        pairs = draw(st.lists(st.tuples(KEYS, SCALARS), max_size=3))
        trailing = draw(st.sampled_from(["", "", ","]))
        return "{ " + ", ".join(f"{k} = {v}" for k, v in pairs) + trailing + " }"
    return draw(st.sampled_from(["", "[", "{", '"a" "b"', "[[1], 2]", "{ a = { b = 'c' } }"]))


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from([0, 1, 1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3]))
    space = draw(st.sampled_from(["", "", " ", "\t"]))
    comment = draw(st.sampled_from(["", "", "", "", " # c", "#", " # é ] = [", "", " #\x01"]))
    if kind == 0:
        return space + comment.strip()
    path = draw(st.lists(KEYS, min_size=1, max_size=2))
    dotted = draw(st.sampled_from([".", " . "])).join(path)
    if kind == 1:
        return f"{space}[{space}{dotted}{space}]{comment}"
    if kind == 2:
        return f"{space}[[{dotted}]]{comment}"
    if kind == 3:  # junk
        return draw(st.sampled_from(["[a]]", "[[a]", "= 1", "a =", "a == 1", "[ ]", "\r", "x"]))
    equals = draw(st.sampled_from(["=", " = ", "\t=\t"]))
    return f"{space}{draw(KEYS)}{equals}{draw(values())}{comment}"


@settings(max_examples=800, deadline=None)
@given(st.lists(lines(), max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_the_subset_reads_what_tomllib_reads_or_steps_aside(
    document: list[str], newline: str
) -> None:
    text = newline.join(document)
    try:
        expected = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(toml_subset._Outside):
            toml_subset._read(text)
        return
    try:
        found = toml_subset._read(text)
    except toml_subset._Outside:
        return
    assert found == expected


def rules_files() -> list[Path]:
    return [PROJECT / "rules.toml", *sorted(RULES_DIR.glob("*.toml"))]


@pytest.mark.parametrize("path", rules_files(), ids=lambda p: p.name)
def test_this_repositorys_rules_files_are_read_without_tomllib(path: Path) -> None:
    """The usual rules file never needs tomllib (or its import)."""
    text = path.read_text(encoding="utf-8-sig")
    assert toml_subset._read(text) == tomllib.loads(text)


def test_text_outside_the_subset_is_read_by_tomllib() -> None:
    text = 'a = 1_0.5\nb = "esc\\u00e9"\n[t]\nc.d = 2\n'
    assert toml_subset.loads(text) == tomllib.loads(text)
    with pytest.raises(tomllib.TOMLDecodeError):
        toml_subset.loads("[a]\n[a]\n")
