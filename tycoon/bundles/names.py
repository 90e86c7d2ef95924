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
"""``bundle.put`` / ``bundle.get``: the hosts serve them (queue group), in the signer's
own bucket. Users and agents use their bucket only this way: they hold no JetStream right."""


def request(op: str) -> str:
    """The subject of one bundle request (``put``, ``get``)."""
    return f"tycoon.bundle.{op}"


def host_publish() -> tuple[str, ...]:
    """What a host publishes to read any account's bundles and write results back."""
    return ("$O.*.C.*", "$O.*.M.*", "$JS.API.STREAM.MSG.GET.*")


JS_DENIED = (
    "$JS.API.INFO", "$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.INFO.>",
    "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>", "$JS.API.STREAM.PEER.>",
    "$JS.API.STREAM.LEADER.>", "$JS.API.DIRECT.>", "$JS.API.CONSUMER.>", "$JS.API.ACCOUNT.>",
    "$JS.API.SERVER.>", "$JS.API.META.>", "$JS.ACK.>", "$JS.FC.>", "$JS.EVENT.>",
    "$JS.API.STREAM.TEMPLATE.>", "$KV.>", "$SYS.>",
)
"""Denied to the hosts, which read and write buckets (deny wins): every JetStream API but
STREAM.MSG.GET. A direct get is denied above all: its answer, steered by a reply subject
onto ``$JS.API.STREAM.PURGE.<stream>`` or ``.DELETE.``, is executed by the server."""


BANK_CREATES = "$JS.API.STREAM.CREATE.*"
"""The bank's right to make a bucket when it opens an account (stream names are one token:
NATS cannot narrow it to ``OBJ_bundles-*``; the bank may not update, purge or delete)."""
