"""Validate strict JSON without building it, so that memory stays bounded for any document.

``json.loads`` with an ``object_pairs_hook`` checks everything we want and builds the whole tree
only to throw it away: ten mebibytes of ``[{},{},…]`` become three million dicts. This module
walks the UTF-8 bytes instead, with regular expressions doing the bulk of the work in C, and
keeps only a stack of open containers and one 8-byte hash per member of each open object.

It accepts what :func:`flask_hybrid.core.encoding.loads_json` accepts -- UTF-8 only, no
duplicate members (compared after unescaping), no ``NaN`` or ``Infinity``, no integer with more
digits than ``int()`` converts -- except that containers nested deeper than :data:`MAX_DEPTH`
are refused at that fixed depth rather than wherever the interpreter's recursion limit falls.
Member names of large objects are compared by Python's keyed 64-bit ``hash`` of their UTF-8:
two different names collide, and their object is refused, with a chance of about 2**-64.

Regular expressions here repeat groups a bounded number of times (``{1,256}``): ``re`` keeps
about 70 bytes of state for every repetition of a group, so ``(?:…)*`` over a whole document
would cost more memory than the tree it replaces.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from array import array
from collections.abc import Iterator

from ..errors import InvalidPayload

Buffer = bytes | bytearray

#: Containers nested deeper than this are refused (``json.loads`` stops near 1000, by stack).
MAX_DEPTH = 512
_RUN = 256  # array elements or object members matched by one regular-expression call
_SMALL_OBJECT = 64  # up to this many members, one plain set of hashes when the object closes
_UTF8_CHUNK = 256 * 1024  # decoded (and thrown away) at a time to check the UTF-8
_NAME_PIECE = 64 * 1024  # member names longer than this are unescaped and hashed piecewise
_SHORT_NAME = 256  # top-level member names are reported up to this many bytes

# -- patterns ----------------------------------------------------------------------------------
_WS = rb"[ \t\n\r]*"
_PLAIN_STRING = rb'"[^"\\\x00-\x1f]*"'  # no escapes: its bytes are its UTF-8
# A plain, short member name, captured. Never longer than _NAME_PIECE, so that its hash() is
# what _name_hash gives for the same name however it is spelled elsewhere.
_RUN_NAME = rb'"([^"\\\x00-\x1f]{0,1024})"'
_INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 0)()
# A float's integer part may be any length; an integer's is bounded like int()'s conversion.
_NUMBER = (
    rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
    rb"|-?(?:0|[1-9][0-9]" + (b"{0,%d}" % (_INT_DIGITS - 1) if _INT_DIGITS else b"*") + b")"
)
_SCALAR = rb"(?:" + _PLAIN_STRING + rb"|" + _NUMBER + rb"|true|false|null)"
# Values that need no stack: scalars, empty containers and short arrays of scalars.
_SIMPLE = (
    rb"(?:"
    + _SCALAR
    + rb"|\{"
    + _WS
    + rb"\}|\["
    + _WS
    + rb"(?:"
    + _SCALAR
    + _WS
    + rb"(?:,"
    + _WS
    + _SCALAR
    + _WS
    + rb"){0,15})?\])"
)
_SIMPLE_MEMBER = _RUN_NAME + _WS + rb":" + _WS + _SIMPLE + _WS


def _flat_object(members: int) -> bytes:
    """The pattern of an object of 1 to ``members`` simple members."""
    return (
        rb"\{"
        + _WS
        + rb"(?:"
        + _SIMPLE_MEMBER
        + rb","
        + _WS
        + rb"){0,%d}" % (members - 1)
        + _SIMPLE_MEMBER
        + rb"\}"
    )


_WHITESPACE = re.compile(_WS)
_SCALAR_VALUE = re.compile(_SCALAR)
_STRING_BODY = re.compile(rb'[^"\\\x00-\x1f]+')
_ESCAPES = re.compile(rb'(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*){1,%d}' % _RUN)
# Bounded pieces of a string's body, for unescaping a long name a piece at a time.
_PLAIN_RUN = re.compile(rb'[^"\\\x00-\x1f]{4,4096}|[^"\\\x00-\x1f]{1,3}')
_ESCAPE_RUN = re.compile(rb'(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})){1,%d}' % _RUN)
_LOW_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][c-fC-F]")
# Runs of array elements, each with its comma: simple values, or flat objects (records).
_ARRAY_RUN = re.compile(rb"(?:" + _SIMPLE + _WS + rb"," + _WS + rb"){1,%d}" % _RUN)
_RECORD_RUN = re.compile(rb"(?:" + _flat_object(32) + _WS + rb"," + _WS + rb"){1,64}")
# Runs of simple members of an object, each with its comma; and one flat object.
_MEMBER_RUN = re.compile(rb"(?:" + _SIMPLE_MEMBER + rb"," + _WS + rb"){1,%d}" % _RUN)
_FLAT_OBJECT = re.compile(_flat_object(_RUN))
# The members of such a run or object, one match each: the name (and what follows the value,
# since "}" ends a record). Matched in a text already checked, they follow one another.
_MEMBER_NAMES = re.compile(_SIMPLE_MEMBER + rb"[,}]")
_RECORD_MEMBERS = re.compile(_SIMPLE_MEMBER + rb"([,}])")
# Runs of containers opened one inside the other ("[" or '{"name":'); then each of them.
_OPENER = rb"(\[)" + _WS + rb"|\{" + _WS + _RUN_NAME + _WS + rb":" + _WS
_OPENER_RUN = re.compile(rb"(?:" + _OPENER + rb"){1,%d}" % _RUN)
_OPENERS = re.compile(_OPENER)
_CLOSERS = re.compile(rb"[\]}][\]} \t\n\r]*")
_CLOSER_OF = bytes.maketrans(b"[{", b"]}")
_WHITESPACE_BYTES = b" \t\n\r"

_QUOTE, _BACKSLASH, _COMMA, _COLON = b'"'[0], b"\\"[0], b","[0], b":"[0]
_OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b"[{]}"


# -- entry points ------------------------------------------------------------------------------
def check_json(data: Buffer) -> None:
    """Refuse (:class:`InvalidPayload`) anything but one strict JSON value; build nothing."""
    _Scanner(data, top_members=False).scan()


def json_object_spans(data: Buffer) -> dict[str, tuple[int, int]]:
    """Check that ``data`` is one strict JSON object; return where each member's value lies.

    ``data[start:end]`` is the member's JSON text, so a caller can read a large string member
    in place. Members whose names are longer than 256 bytes are checked but not listed.
    """
    return _Scanner(data, top_members=True).scan()


# -- helpers -----------------------------------------------------------------------------------
def _check_utf8(data: Buffer) -> None:
    if data.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with memoryview(data) as view:
        try:
            for start in range(0, len(data), _UTF8_CHUNK):
                decoder.decode(view[start : start + _UTF8_CHUNK])
            decoder.decode(b"", True)
        except UnicodeDecodeError:
            raise InvalidPayload("not_json") from None


def _unescaped_pieces(data: Buffer, start: int, stop: int) -> Iterator[bytes]:
    """The UTF-8 of the string token ``data[start:stop]``, unescaped a piece at a time.

    A piece ends only between escapes, never between the halves of a surrogate pair, so the
    pieces join to what unescaping the whole token at once gives.
    """
    piece_start = pos = start + 1
    while pos < stop - 1:
        scanner = _ESCAPE_RUN if data[pos] == _BACKSLASH else _PLAIN_RUN
        pos = scanner.match(data, pos, stop - 1).end()  # type: ignore[union-attr]
        while 0x80 <= data[pos] < 0xC0:  # inside a UTF-8 sequence: end before it
            pos -= 1
        if pos == stop - 1 or (
            pos - piece_start >= _NAME_PIECE and not _LOW_SURROGATE_ESCAPE.match(data, pos)
        ):
            text = json.loads(b'"' + bytes(data[piece_start:pos]) + b'"')
            yield str(text).encode("utf-8", "surrogatepass")
            piece_start = pos


def _name_hash(data: Buffer, start: int, stop: int) -> int:
    """``hash`` of the UTF-8 of the member name whose token is ``data[start:stop]``.

    Equal names, escaped or not, hash alike. Names longer than 64 KiB hash as the tuple of the
    hashes of their 64 KiB pieces, so no copy of a huge name is ever made.
    """
    if data.find(b"\\", start, stop) < 0:
        if stop - start - 2 <= _NAME_PIECE:
            return hash(bytes(data[start + 1 : stop - 1]))
        pieces = range(start + 1, stop - 1, _NAME_PIECE)
        return hash(tuple(hash(bytes(data[at : min(at + _NAME_PIECE, stop - 1)])) for at in pieces))
    pending = bytearray()
    piece_hashes: list[int] = []
    for unescaped in _unescaped_pieces(data, start, stop):
        pending += unescaped
        while len(pending) > _NAME_PIECE:
            piece_hashes.append(hash(bytes(pending[:_NAME_PIECE])))
            del pending[:_NAME_PIECE]
    if not piece_hashes:
        return hash(bytes(pending))
    piece_hashes.append(hash(bytes(pending)))
    return hash(tuple(piece_hashes))


def _short_name(data: Buffer, start: int, stop: int) -> str | None:
    """A member name as text, when it is short enough to be one that callers look up."""
    if stop - start > 6 * _SHORT_NAME + 2:
        return None
    name = str(json.loads(bytes(data[start:stop])))
    return name if len(name.encode("utf-8", "surrogatepass")) <= _SHORT_NAME else None


def _has_duplicates(hashes: array[int], start: int) -> bool:
    """Whether ``hashes[start:]`` (one object's member names) holds a value twice."""
    count = len(hashes) - start
    if count < 2:
        return False
    with memoryview(hashes) as view:
        if count <= _SMALL_OBJECT:
            return len(set(view[start:])) != count
        # A large object: split the hashes by their low bits so that no set holds millions.
        mask = (1 << (count // _SMALL_OBJECT).bit_length()) - 1
        buckets = [array("q") for _ in range(mask + 1)]
        for value in view[start:]:
            buckets[value & mask].append(value)
    return any(len(set(bucket)) != len(bucket) for bucket in buckets)


def _refuse_duplicates(names: list[bytes]) -> None:
    if len(set(names)) != len(names):
        raise InvalidPayload("not_json")  # two readers could disagree on which value counts


# -- the scanner -------------------------------------------------------------------------------
class _Scanner:
    """One pass over a document: a stack of open containers and one hash per member."""

    def __init__(self, data: Buffer, *, top_members: bool) -> None:
        self.data = data
        self.end = len(data)
        self.stack = bytearray()  # "[" or "{" for each open container, outermost first
        self.hashes = array("q")  # member-name hashes of the open objects, outermost first
        self.object_starts: list[int] = []  # where each open object's hashes start
        self.top_members = top_members
        self.spans: dict[str, tuple[int, int]] = {}
        self.top_name: str | None = None
        self.top_value_start = 0

    def scan(self) -> dict[str, tuple[int, int]]:
        _check_utf8(self.data)
        pos = self._skip_whitespace(0)
        if self.top_members:  # the top object is opened here, so its members are seen
            if pos == self.end or self.data[pos] != _OPEN_OBJECT:
                raise InvalidPayload("not_json")
            self._open_object()
            pos = self._skip_whitespace(pos + 1)
            if pos < self.end and self.data[pos] == _CLOSE_OBJECT:
                self._after_value(pos)
                return self.spans
            pos = self._members(pos)
        while True:
            pos, complete = self._value(pos)
            if complete:
                pos = self._after_value(pos)
                if not self.stack:
                    return self.spans

    def _skip_whitespace(self, pos: int) -> int:
        return _WHITESPACE.match(self.data, pos).end()  # type: ignore[union-attr]

    def _open_object(self) -> None:
        self.stack += b"{"
        self.object_starts.append(len(self.hashes))

    def _check_depth(self) -> None:
        if len(self.stack) > MAX_DEPTH:
            raise InvalidPayload("not_json")

    # -- values --------------------------------------------------------------------------------
    def _value(self, pos: int) -> tuple[int, bool]:
        """Read the value at ``pos``: ``(its end, True)``; or, when it opens containers that
        have members, ``(the start of the innermost one's first value, False)``."""
        data, end = self.data, self.end
        if pos >= end:
            raise InvalidPayload("not_json")
        first = data[pos]
        if first == _QUOTE:
            return self._string(pos), True
        if first != _OPEN_OBJECT and first != _OPEN_ARRAY:
            scalar = _SCALAR_VALUE.match(data, pos)
            if scalar is None:
                raise InvalidPayload("not_json")
            return scalar.end(), True
        if len(self.stack) >= MAX_DEPTH:
            raise InvalidPayload("not_json")
        if first == _OPEN_OBJECT:
            flat = _FLAT_OBJECT.match(data, pos)
            if flat is not None:
                _refuse_duplicates(_MEMBER_NAMES.findall(data, pos, flat.end()))
                return flat.end(), True
            after_brace = self._skip_whitespace(pos + 1)
            if after_brace < end and data[after_brace] == _CLOSE_OBJECT:
                return after_brace + 1, True
        openers = _OPENER_RUN.match(data, pos)
        if openers is None:  # an object whose first name is long or escaped, or an error
            self._open_object()
            self._check_depth()
            return self._members(self._skip_whitespace(pos + 1)), False
        self._open_containers(pos, openers.end())
        pos = openers.end()
        if self.stack[-1] == _OPEN_OBJECT:
            return pos, False  # at the value of the innermost object's first member
        if pos < end and data[pos] == _CLOSE_ARRAY:
            return pos, True  # an empty array: its closer is read as after a value
        return self._array_elements(pos), False

    def _open_containers(self, start: int, stop: int) -> None:
        """Push each container of an opener run, hashing each object's first name."""
        if self.data.find(b"{", start, stop) < 0:  # arrays only: push them all at once
            self.stack += self.data[start:stop].translate(None, _WHITESPACE_BYTES)
            self._check_depth()
            return
        for bracket, name in _OPENERS.findall(self.data, start, stop):
            if bracket:
                self.stack += b"["
            else:
                self._open_object()
                self.hashes.append(hash(name))
        self._check_depth()

    def _array_elements(self, pos: int) -> int:
        """Skip runs of simple elements and records; return the start of the next other one."""
        data = self.data
        if len(self.stack) < MAX_DEPTH:
            while True:
                run = _ARRAY_RUN.match(data, pos)
                if run is None:
                    run = _RECORD_RUN.match(data, pos)
                    if run is None:
                        break
                    self._check_records(pos, run.end())
                pos = run.end()
        if pos >= self.end or data[pos] in b",]}:":
            raise InvalidPayload("not_json")  # a missing element
        return pos

    def _check_records(self, start: int, stop: int) -> None:
        names: list[bytes] = []
        for name, delimiter in _RECORD_MEMBERS.findall(self.data, start, stop):
            names.append(name)
            if delimiter == b"}":
                _refuse_duplicates(names)
                names = []

    def _members(self, pos: int) -> int:
        """Skip runs of simple members; read the next name; return its value's start."""
        data = self.data
        at_top = self.top_members and len(self.stack) == 1
        if not at_top and len(self.stack) < MAX_DEPTH:
            while run := _MEMBER_RUN.match(data, pos):
                self.hashes.extend(map(hash, _MEMBER_NAMES.findall(data, pos, run.end())))
                pos = run.end()
        if pos >= self.end or data[pos] != _QUOTE:
            raise InvalidPayload("not_json")
        after = self._string(pos)
        self.hashes.append(_name_hash(data, pos, after))
        name_start = pos
        pos = self._skip_whitespace(after)
        if pos >= self.end or data[pos] != _COLON:
            raise InvalidPayload("not_json")
        pos = self._skip_whitespace(pos + 1)
        if at_top:
            self.top_name = _short_name(data, name_start, after)
            self.top_value_start = pos
        return pos

    def _string(self, pos: int) -> int:
        data, end = self.data, self.end
        body = _STRING_BODY.match(data, pos + 1)
        pos = pos + 1 if body is None else body.end()
        while pos < end and data[pos] == _BACKSLASH:
            escapes = _ESCAPES.match(data, pos)
            if escapes is None:
                raise InvalidPayload("not_json")
            pos = escapes.end()
        if pos >= end or data[pos] != _QUOTE:
            raise InvalidPayload("not_json")  # a control character, or no closing quote
        return pos + 1

    # -- between values ------------------------------------------------------------------------
    def _after_value(self, pos: int) -> int:
        """Read closers and a comma after a value; return the next value's start, or the end."""
        data, end, stack = self.data, self.end, self.stack
        while True:
            pos = self._skip_whitespace(pos)
            if not stack:
                if pos != end:
                    raise InvalidPayload("not_json")  # text after the value
                return pos
            if pos >= end:
                raise InvalidPayload("not_json")
            if data[pos] == _COMMA:
                if self.top_members and len(stack) == 1:
                    self._end_top_member(pos)
                pos = self._skip_whitespace(pos + 1)
                if stack[-1] == _OPEN_OBJECT:
                    return self._members(pos)
                return self._array_elements(pos)
            closers = _CLOSERS.match(data, pos)
            if closers is None:
                raise InvalidPayload("not_json")
            run = data[pos : closers.end()].translate(None, _WHITESPACE_BYTES)
            if len(run) > len(stack):
                raise InvalidPayload("not_json")
            if stack[len(stack) - len(run) :][::-1].translate(_CLOSER_OF) != run:
                raise InvalidPayload("not_json")  # "[" closed by "}" or "{" by "]"
            if self.top_members and len(run) == len(stack):
                self._end_top_member(data.rindex(b"}", pos, closers.end()))
            self._close_objects(run.count(b"}"))
            del stack[len(stack) - len(run) :]
            pos = closers.end()

    def _close_objects(self, count: int) -> None:
        hashes, object_starts = self.hashes, self.object_starts
        for _ in range(count):
            start = object_starts.pop()
            if _has_duplicates(hashes, start):
                raise InvalidPayload("not_json")  # two readers could disagree on which value counts
            del hashes[start:]

    def _end_top_member(self, delimiter: int) -> None:
        end = delimiter
        while self.data[end - 1] in _WHITESPACE_BYTES:
            end -= 1
        if self.top_name is not None and self.top_value_start < end:
            self.spans[self.top_name] = (self.top_value_start, end)
