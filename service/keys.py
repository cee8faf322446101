"""Every Redis key genrec writes, formatted here and nowhere else.

Per-user keys start with the user's hash tag, ``genrec:{<user_id>}:...``, so on a Redis
Cluster all keys of one user (history, its times, every model version's live and stale list)
hash to one slot, and a transaction or script over them is allowed (a cluster refuses one that
spans slots with CROSSSLOT):

    genrec:{<user>}:hist                   the history, a LIST of item ids, oldest first
    genrec:{<user>}:hist_ts                the times of its entries, entry for entry
    genrec:{<user>}:<model_version>:topk   the cached top-K of that model version
    genrec:{<user>}:<model_version>:stale  its last invalidated list

Redis hashes only what lies between the first ``{`` and the first ``}`` after it, so a user id
holding ``}`` would end the tag early (and one starting with it leaves the tag empty, which
hashes the whole key, a different slot per key). Such ids are not refused: inside the tag ``%``
is written ``%25`` and ``}`` is written ``%7D`` (percent-encoding, reversible); every other
character, ``{`` included, stands as it is. Keys that are not per user keep their form:
``genrec:<model_version>:similar:<item_id>`` and the precompute checkpoint
``genrec:<model_version>:precompute:<fingerprint>`` (and a Ray job's set of finished batches,
``genrec:<model_version>:precompute:<fingerprint>:done``).

Releases before this scheme wrote ``genrec:hist:<user>``, ``genrec:hist_ts:<user>``,
``genrec:<model_version>:topk:<user>`` and ``genrec:<model_version>:stale:<user>``;
``genrec migrate-keys`` (``service.migrate``) renames them.
"""

from __future__ import annotations

PREFIX = "genrec"
# The SCAN pattern of every history key (SCAN's glob has no special meaning for braces).
HISTORY_PATTERN = PREFIX + ":{*}:hist"
_TAG_OPEN = PREFIX + ":{"
_HISTORY_SUFFIX = "}:hist"


def user_tag(user_id: str) -> str:
    """``{<user_id>}`` with ``%`` and ``}`` percent-encoded: the hash tag of the user's keys."""
    if not user_id:
        raise ValueError("a user id must not be empty (an empty hash tag would hash each key apart)")
    if "%" in user_id or "}" in user_id:  # the common id needs neither replace
        user_id = user_id.replace("%", "%25").replace("}", "%7D")
    return "{" + user_id + "}"


def user_of_tag(tag: str) -> str:
    """The user id inside a tag's braces, as :func:`user_tag` encoded it."""
    return tag.replace("%7D", "}").replace("%25", "%") if "%" in tag else tag


def history_key(user_id: str) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:hist"


def times_key(user_id: str) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:hist_ts"


def topk_key(model_version: str, user_id: str) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:{model_version}:topk"


def stale_key(model_version: str, user_id: str) -> str:
    return f"{PREFIX}:{user_tag(user_id)}:{model_version}:stale"


def similar_key(model_version: str, item_id: str) -> str:
    """The items like an item (one key per item, never in a transaction with another)."""
    return f"{PREFIX}:{model_version}:similar:{item_id}"


def checkpoint_key(model_version: str, fingerprint: str) -> str:
    """A precompute job's checkpoint (one key per job)."""
    return f"{PREFIX}:{model_version}:precompute:{fingerprint}"


def done_batches_key(model_version: str, fingerprint: str) -> str:
    """The set of finished batch ids of a precompute job whose batches finish in any order (Ray)."""
    return f"{checkpoint_key(model_version, fingerprint)}:done"


def user_of_history_key(key: str) -> str | None:
    """The user whose history ``key`` is (a key HISTORY_PATTERN matched), None for any other key."""
    if not (key.startswith(_TAG_OPEN) and key.endswith(_HISTORY_SUFFIX)):
        return None
    tag = key[len(_TAG_OPEN) : -len(_HISTORY_SUFFIX)]
    return user_of_tag(tag) if tag and "}" not in tag else None
