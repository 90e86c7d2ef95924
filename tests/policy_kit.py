"""What nats-server allows a principal, for tests of the policy.

The package only renders permissions (:func:`tycoon.natspolicy.permissions`); the server
enforces them. These checks read a :class:`~tycoon.natspolicy.Permissions` the way the
server does: NATS wildcard matching, allow and deny lists, deny wins."""

from __future__ import annotations

from tycoon.natspolicy import Permissions


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` one token, ``>`` one or more trailing tokens."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _permitted(subject: str, allow: tuple[str, ...], deny: tuple[str, ...]) -> bool:
    if any(subject_matches(d, subject) for d in deny):
        return False
    return any(subject_matches(a, subject) for a in allow)


def may_publish(perms: Permissions, subject: str) -> bool:
    """Whether the server lets the principal publish on ``subject`` (not replies)."""
    return _permitted(subject, perms.publish_allow, perms.publish_deny)


def may_subscribe(perms: Permissions, subject: str) -> bool:
    """Whether the server lets the principal subscribe to exactly ``subject``."""
    return _permitted(subject, perms.subscribe_allow, perms.subscribe_deny)
