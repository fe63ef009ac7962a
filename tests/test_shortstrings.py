"""Numbering short strings in compiled code, and the fall-back to dictionary encoding."""

from __future__ import annotations

import pyarrow as pa

from appliance.analyses.merge import StringCodes
from appliance.analyses.shortstrings import ShortStringCoder


def _texts(coder: StringCodes, array: pa.Array) -> list[str | None]:
    codes, valid = coder.encode(array)
    return [coder.texts[code] if ok else None for code, ok in zip(codes, valid, strict=True)]


def test_codes_follow_first_appearance_across_batches() -> None:
    coder = StringCodes(64)
    first = pa.array(["CON", "REQ", None, "CON", ""])
    second = pa.array(["x", "FIN", "REQ", "CON"]).slice(1)
    assert _texts(coder, first) == ["CON", "REQ", None, "CON", ""]
    assert _texts(coder, second) == ["FIN", "REQ", "CON"]
    assert coder.texts == ["CON", "REQ", "", "FIN"]


def test_long_values_fall_back_to_dictionary_encoding() -> None:
    coder = StringCodes(64)
    assert _texts(coder, pa.array(["e", "e d"])) == ["e", "e d"]
    long_value = "a value longer than fifteen bytes"
    assert _texts(coder, pa.array([long_value, "e", "new"])) == [long_value, "e", "new"]
    assert coder.texts == ["e", "e d", long_value, "new"]


def test_more_texts_than_the_table_holds_are_refused() -> None:
    coder = ShortStringCoder(4)
    array = pa.array([str(number) for number in range(5)])
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    assert coder.code(array, valid) is None
    assert coder.texts == []


def test_limit_marks_codes_beyond_it_not_valid() -> None:
    coder = StringCodes(2)
    codes, valid = coder.encode(pa.array(["a", "b", "c", "a"]))
    assert list(valid) == [True, True, False, True]
    valid_texts = [coder.texts[code] for code, ok in zip(codes, valid, strict=True) if ok]
    assert valid_texts == ["a", "b", "a"]
