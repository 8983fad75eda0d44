"""The JSON check that builds nothing accepts exactly what ``json.loads`` (strict) accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_hybrid.core.encoding import JsonObjectText, loads_json
from flask_hybrid.core.strictjson import MAX_DEPTH, check_json, json_object_spans
from flask_hybrid.errors import InvalidPayload


def accepted_by_loads(data: bytes) -> bool:
    try:
        loads_json(data)
    except InvalidPayload:
        return False
    return True


def accepted_by_check(data: bytes) -> bool:
    try:
        check_json(bytearray(data))
    except InvalidPayload:
        return False
    return True


NAMES = st.sampled_from(["a", "b", "é", "\U0001f600", 'a"b', "\\", "", "\ud800", "k" * 40])
SCALARS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(st.tuples(NAMES, inner), max_size=6),  # pairs: duplicates possible
    ),
    max_leaves=30,
)


def spell(value: Any, draw: Any) -> str:
    """One JSON spelling of ``value``: random spacing, escaped or raw text, dict pairs kept."""
    space = draw(st.sampled_from(["", "", " ", "\n", "\t "]))
    ascii_only = draw(st.booleans())
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        members = [
            json.dumps(name, ensure_ascii=ascii_only) + space + ":" + spell(item, draw)
            for name, item in value
        ]
        return "{" + space + ("," + space).join(members) + space + "}"
    if isinstance(value, list):
        return "[" + space + ("," + space).join(spell(item, draw) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


MUTATIONS = st.lists(
    st.tuples(
        st.integers(0, 10_000),
        st.sampled_from([*b'[]{},:"\\ 0123456789eE.-+tfnul', 0, 0x1F, 0xFF, 0xC3]),
        st.sampled_from(["replace", "insert", "delete"]),
    ),
    max_size=3,
)


@st.composite
def documents(draw: Any) -> bytes:
    text = spell(draw(VALUES), draw).encode("utf-8", "surrogatepass")
    data = bytearray(text)
    for where, byte, operation in draw(MUTATIONS):
        where %= len(data) + 1
        if operation == "insert":
            data.insert(where, byte)
        elif where < len(data):
            if operation == "replace":
                data[where] = byte
            else:
                del data[where]
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(documents())
def test_same_verdict_as_loads_json(document: bytes) -> None:
    assert accepted_by_check(document) == accepted_by_loads(document)


@settings(max_examples=300, deadline=None)
@given(documents())
def test_object_spans_are_the_members(document: bytes) -> None:
    if not accepted_by_loads(document) or not isinstance(loads_json(document), dict):
        return
    spans = json_object_spans(document)
    members = {
        name: value
        for name, value in loads_json(document).items()
        if len(name.encode("utf-8", "surrogatepass")) <= 256
    }
    read = {name: json.loads(document[start:end]) for name, (start, end) in spans.items()}
    assert json.dumps(read, sort_keys=True) == json.dumps(members, sort_keys=True)


@pytest.mark.parametrize(
    ("document", "accepted"),
    [
        pytest.param(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, True, id="max-depth"),
        pytest.param(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), False, id="too-deep"),
        pytest.param(b"[" * (MAX_DEPTH - 1) + b"{}" + b"]" * (MAX_DEPTH - 1), True, id="leaf"),
        pytest.param(b"[" * MAX_DEPTH + b"{}" + b"]" * MAX_DEPTH, False, id="leaf-too-deep"),
        pytest.param(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), False, id="obj"),
        pytest.param(b"1" * 4300, True, id="int-4300-digits"),
        pytest.param(b"1" * 4301, False, id="int-4301-digits"),
        pytest.param(b"1" * 5000 + b".5", True, id="long-float"),
        pytest.param(b'{"a":1,"\\u0061":2}', False, id="duplicate-escaped"),
        pytest.param(b'{"\\ud83d\\ude00":1,"\xf0\x9f\x98\x80":2}', False, id="duplicate-pair"),
        pytest.param(b'{"\\ud83d":1,"\\ude00":2}', True, id="lone-surrogates"),
        pytest.param(b"\xef\xbb\xbf[]", False, id="bom"),
        pytest.param(b'["\xed\xa0\x80"]', False, id="encoded-surrogate"),
        pytest.param(b"[NaN]", False, id="nan"),
        pytest.param(b" \n", False, id="blank"),
    ],
)
def test_edges(document: bytes, accepted: bool) -> None:
    assert accepted_by_check(document) is accepted


def test_large_objects_and_runs_keep_their_duplicates() -> None:
    members = [f'"k{number}":{number}' for number in range(5000)]
    assert accepted_by_check(("{" + ",".join(members) + "}").encode())
    for duplicate in (0, 2500, 4999):
        doubled = [*members, f'"k{duplicate}":null']
        assert not accepted_by_check(("{" + ",".join(doubled) + "}").encode())
    records = ",".join(['{"a":1,"b":[1,2],"c":"x"}'] * 300 + ['{"a":1,"a":2}'])
    assert not accepted_by_check(f"[{records}]".encode())


def test_huge_names_are_compared_piecewise() -> None:
    name = "abcé\U0001f600" * 8000  # 72 KB: past one 64 KiB piece, escaped and not
    plain = json.dumps(name, ensure_ascii=False)
    escaped = json.dumps(name)
    assert not accepted_by_check(f"{{{plain}:1,{escaped}:2}}".encode())
    assert not accepted_by_check(f'{{"x":[1],{escaped}:1,{plain}:2}}'.encode())
    assert accepted_by_check(f"{{{plain}:1,{json.dumps(name + 'x')}:2}}".encode())


def test_object_text_reads_large_strings_in_place() -> None:
    body = bytearray(b'{"ct":"' + b"A" * 1000 + b'","n":1,"e":"\\u0041B"}')
    members = JsonObjectText(body)
    ciphertext = members.string("ct")
    assert isinstance(ciphertext, memoryview)
    assert ciphertext.obj is body
    assert members.text("e") == "AB"
    assert members.string("absent") is None
    with pytest.raises(InvalidPayload):
        members.string("n")


@pytest.mark.parametrize("depth", [1, 100, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 700])
def test_small_documents_take_the_fast_path_with_the_same_verdict(depth: int) -> None:
    """check_json_text gives small documents to the C parser: the verdict must not change."""
    from flask_hybrid.core.encoding import check_json_text

    document = b"[" * depth + b"]" * depth
    assert len(document) <= 4096
    verdict = []
    for check in (check_json_text, check_json):
        try:
            check(bytearray(document))
            verdict.append(True)
        except InvalidPayload:
            verdict.append(False)
    assert verdict[0] == verdict[1] == (depth <= MAX_DEPTH)
