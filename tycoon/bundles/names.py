"""Names of an account's bundle bucket (pure: the permission policy uses them too)."""

from __future__ import annotations

BUCKET_PREFIX = "bundles-"


def bucket(account_id: str) -> str:
    """The object-store bucket of an account (its 16-character subject id)."""
    return f"{BUCKET_PREFIX}{account_id}"


def stream(account_id: str) -> str:
    """The JetStream stream that holds an account's bucket."""
    return f"OBJ_{bucket(account_id)}"


def chunks(account_id: str, nuid: str = "*") -> str:
    """The subject of one object's chunks (``*``: any object's)."""
    return f"$O.{bucket(account_id)}.C.{nuid}"


def metas(account_id: str, name: str = "*") -> str:
    """The subject of one object's meta (base64url name; ``*``: any object's)."""
    return f"$O.{bucket(account_id)}.M.{name}"


def msg_get(account_id: str) -> str:
    """The one JetStream API subject a bucket is read through: STREAM.MSG.GET."""
    return f"$JS.API.STREAM.MSG.GET.{stream(account_id)}"


REQUESTS = "tycoon.bundle.*"
"""``bundle.put`` / ``bundle.get``: the store serves them (``tycoon store serve``, queue
group ``bundles``). Users, agents and hosts reach buckets only this way: they hold no
JetStream right."""


def request(op: str) -> str:
    """The subject of one bundle request (``put``, ``get``)."""
    return f"tycoon.bundle.{op}"


STORE_CREATES = "$JS.API.STREAM.CREATE.*"
"""The store's right to make an account's bucket on its first put (stream names are one
token: NATS cannot narrow it to ``OBJ_bundles-*``; the store may not update, purge or
delete)."""


def store_publish() -> tuple[str, ...]:
    """What the store publishes to make buckets and serve bundles (the only key with rights
    on them): create a stream, put chunks and metas, get messages. NATS wildcards match
    whole tokens only, so ``$O.*`` cannot be narrowed to ``$O.bundles-*``."""
    return (STORE_CREATES, "$O.*.C.*", "$O.*.M.*", "$JS.API.STREAM.MSG.GET.*")
