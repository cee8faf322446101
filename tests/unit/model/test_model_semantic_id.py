"""Semantic-ID codec: token format, scheme validation, format/parse round trip and parse errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.semantic_id import SidScheme, sid_token


def test_sid_token_format_uses_one_letter_per_level() -> None:
    assert sid_token(0, 0) == "<a_0>"
    assert sid_token(0, 12) == "<a_12>"
    assert sid_token(1, 7) == "<b_7>"
    assert sid_token(25, 3) == "<z_3>"


def test_same_code_at_two_levels_is_two_tokens() -> None:
    assert sid_token(0, 5) != sid_token(1, 5)


@pytest.mark.parametrize("level", [-1, 26, 100])
def test_sid_token_rejects_levels_outside_the_alphabet(level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        sid_token(level, 0)


def test_sid_token_rejects_negative_codes() -> None:
    with pytest.raises(ValueError, match="code must be >= 0"):
        sid_token(0, -1)


def test_scheme_needs_levels_and_positive_codebooks() -> None:
    with pytest.raises(ValueError, match="at least one level"):
        SidScheme(())
    with pytest.raises(ValueError, match="codebook sizes must be >= 1"):
        SidScheme((4, 0, 2))
    with pytest.raises(ValueError, match="codebook sizes must be >= 1"):
        SidScheme((-3,))


def test_scheme_shape() -> None:
    scheme = SidScheme((3, 4, 2))
    assert scheme.num_levels == 3
    assert scheme.codebook_sizes == (3, 4, 2)


def test_all_tokens_is_level_by_level_in_code_order() -> None:
    scheme = SidScheme((2, 3))
    assert scheme.all_tokens() == ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"]


def test_all_tokens_are_distinct_and_count_matches_the_codebooks() -> None:
    scheme = SidScheme((16, 16, 8, 4))
    tokens = scheme.all_tokens()
    assert len(tokens) == 16 + 16 + 8 + 4
    assert len(set(tokens)) == len(tokens)


def test_format_tokens_and_parse() -> None:
    scheme = SidScheme((3, 10, 2))
    sid = (2, 9, 0)
    assert scheme.format(sid) == "<a_2><b_9><c_0>"
    assert scheme.tokens(sid) == ["<a_2>", "<b_9>", "<c_0>"]
    assert scheme.parse("<a_2><b_9><c_0>") == sid
    assert isinstance(scheme.parse("<a_2><b_9><c_0>"), tuple)


@st.composite
def scheme_and_sid(draw: st.DrawFn) -> tuple[SidScheme, tuple[int, ...]]:
    sizes = draw(st.lists(st.integers(1, 300), min_size=1, max_size=8))
    sid = tuple(draw(st.integers(0, size - 1)) for size in sizes)
    return SidScheme(tuple(sizes)), sid


@settings(max_examples=200, deadline=None)
@given(scheme_and_sid())
def test_format_parse_round_trip(case: tuple[SidScheme, tuple[int, ...]]) -> None:
    scheme, sid = case
    text = scheme.format(sid)
    assert scheme.parse(text) == sid
    assert "".join(scheme.tokens(sid)) == text
    assert all(token in set(scheme.all_tokens()) for token in scheme.tokens(sid))


def test_validate_accepts_the_corners_of_the_scheme() -> None:
    scheme = SidScheme((3, 4))
    scheme.validate((0, 0))
    scheme.validate((2, 3))


@pytest.mark.parametrize(
    ("sid", "message"),
    [
        ((1,), "has 1 codes, scheme has 2 levels"),
        ((1, 2, 0), "has 3 codes, scheme has 2 levels"),
        ((3, 0), "code 3 at level 0 outside codebook of size 3"),
        ((0, 4), "code 4 at level 1 outside codebook of size 4"),
        ((0, -1), "code -1 at level 1"),
    ],
)
def test_validate_rejects_ids_that_do_not_fit(sid: tuple[int, ...], message: str) -> None:
    scheme = SidScheme((3, 4))
    with pytest.raises(ValueError, match=message):
        scheme.validate(sid)
    with pytest.raises(ValueError, match=message):
        scheme.format(sid)
    with pytest.raises(ValueError, match=message):
        scheme.tokens(sid)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 3 semantic-ID tokens"),
        ("hello", "unexpected text"),
        ("<a_1><b_2>", "found 2"),
        ("<a_1><b_2><c_0><d_0>", "found 4"),
        ("<a_1><c_2><b_0>", "expected level 'b'"),
        ("<b_1><a_2><c_0>", "expected level 'a'"),
        ("<a_3><b_0><c_0>", "outside codebook"),
        ("<a_0><b_0><c_2>", "outside codebook"),
    ],
)
def test_parse_rejects_malformed_text(text: str, message: str) -> None:
    scheme = SidScheme((3, 4, 2))
    with pytest.raises(ValueError, match=message):
        scheme.parse(text)


def test_scheme_is_hashable_and_compares_by_value() -> None:
    assert SidScheme((3, 4)) == SidScheme((3, 4))
    assert SidScheme((3, 4)) != SidScheme((4, 3))
    assert len({SidScheme((3, 4)), SidScheme((3, 4))}) == 1


@pytest.mark.parametrize("text", ["x<a_1><b_2>", "<a_1> and <b_2>", "<a_1><b_2>!"])
def test_parse_rejects_text_around_the_tokens(text: str) -> None:
    with pytest.raises(ValueError, match="unexpected text"):
        SidScheme((4, 4)).parse(text)
