"""The key scheme: every per-user key of one user in one hash slot, whatever the user id holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from service.keys import (
    HISTORY_PATTERN,
    checkpoint_key,
    history_key,
    similar_key,
    stale_key,
    times_key,
    topk_key,
    user_of_history_key,
    user_tag,
)

AWKWARD_IDS = ["u42", "}", "a}b", "{x}", "}{", "100%", "100%7D", "%25", "{", "a b:c", "ünï"]


def per_user_keys(user_id: str) -> list[str]:
    return [
        history_key(user_id),
        times_key(user_id),
        topk_key("v1", user_id),
        stale_key("v1", user_id),
        topk_key("beauty-2026:12", user_id),
        stale_key("other}{version", user_id),
    ]


def test_the_keys_have_the_documented_form() -> None:
    assert history_key("u42") == "genrec:{u42}:hist"
    assert times_key("u42") == "genrec:{u42}:hist_ts"
    assert topk_key("v1", "u42") == "genrec:{u42}:v1:topk"
    assert stale_key("v1", "u42") == "genrec:{u42}:v1:stale"
    assert similar_key("v1", "i3") == "genrec:v1:similar:i3"
    assert checkpoint_key("v1", "abc") == "genrec:v1:precompute:abc"


@pytest.mark.parametrize("user_id", AWKWARD_IDS)
def test_every_key_of_one_user_hashes_to_one_slot(user_id: str) -> None:
    slots = {key_slot(key.encode()) for key in per_user_keys(user_id)}
    assert len(slots) == 1, (user_id, per_user_keys(user_id))
    # the slot is the tag's: Redis hashes only what lies between the first { and the next }
    assert slots == {key_slot(user_tag(user_id).encode())}


@given(st.text(min_size=1, max_size=40))
def test_any_user_id_keeps_one_slot_and_round_trips(user_id: str) -> None:
    assert len({key_slot(key.encode()) for key in per_user_keys(user_id)}) == 1
    assert user_of_history_key(history_key(user_id)) == user_id


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_different_users_never_share_a_key(a: str, b: str) -> None:
    if a != b:
        assert not set(per_user_keys(a)) & set(per_user_keys(b))


def test_braces_and_percent_signs_are_escaped_only_inside_the_tag() -> None:
    assert user_tag("a}b") == "{a%7Db}"
    assert user_tag("100%7D") == "{100%257D}"  # not the tag of "100}"
    assert user_tag("{x") == "{{x}"  # a { inside the tag is harmless: the first } closes it
    with pytest.raises(ValueError, match="must not be empty"):
        history_key("")


def test_only_history_keys_are_read_back_as_users() -> None:
    assert user_of_history_key("genrec:{u1}:hist") == "u1"
    for other in (
        times_key("u1"),
        topk_key("v1", "u1"),
        "genrec:hist:u1",
        "genrec:{}:hist",
        "genrec:{a}b}:hist",
    ):
        assert user_of_history_key(other) is None
    assert HISTORY_PATTERN == "genrec:{*}:hist"
