"""Mutual TLS for clients: the certificate a Tycoon client presents to NATS servers that
verify their clients (rendered by ``tycoon init --tls-ca``: ``verify: true``).

Every connection goes through :func:`tycoon.bus.connection.open_bus`, which presents
:func:`client_tls`'s context when ``$TYCOON_TLS_CERT`` and ``$TYCOON_TLS_KEY`` are set
(a service's config file: ``tls_cert``/``tls_key``). See docs/operations.md (TLS).
"""

from __future__ import annotations

import os
import ssl

from tycoon.errors import Rejected

TLS_CERT_ENV, TLS_KEY_ENV = "TYCOON_TLS_CERT", "TYCOON_TLS_KEY"
"""A client certificate and its key (PEM files): presented to a server that verifies its
clients (mutual TLS, ``tycoon init --tls-ca``). Config files: ``tls_cert``, ``tls_key``."""


def client_tls(cert: str | None = None, key: str | None = None) -> ssl.SSLContext | None:
    """The TLS context that presents this client's certificate: ``cert``/``key``, else
    ``$TYCOON_TLS_CERT``/``$TYCOON_TLS_KEY``; None when neither is set (nats.py then uses
    its default context). The servers are verified as by default (system CAs and
    ``SSL_CERT_FILE``, i.e. a config file's ``tls_ca``)."""
    cert = cert or os.environ.get(TLS_CERT_ENV) or None
    key = key or os.environ.get(TLS_KEY_ENV) or None
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise Rejected("malformed", f"a client certificate needs both {TLS_CERT_ENV} and "
                                    f"{TLS_KEY_ENV} (config files: tls_cert and tls_key)")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise Rejected("malformed", f"cannot load the client certificate {cert} with key "
                                    f"{key}: {exc}") from exc
    return context
