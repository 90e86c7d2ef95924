"""The live web dashboard (docs/dashboard.md): a static page served on localhost whose
browser connects straight to nats-server's WebSocket listener as a read-only ``viewer``
and verifies every envelope's signature itself."""
