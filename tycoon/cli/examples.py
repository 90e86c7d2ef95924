"""Examples shown under each command's ``--help`` (the argparse epilog), by command path."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "tycoon up --state .tycoon                 # a whole market on this machine",
        "export TYCOON_HOME=.tycoon                # then every command finds its URL and keys",
        "tycoon status                             # which URL, keys and bank it uses",
        "tycoon --as operator top                  # live view; q quits",
    ),
    "up": (
        "tycoon up --state .tycoon                 # Ctrl-C stops; run again to resume",
        "tycoon up --duration 60 --state /tmp/m    # one minute, then a summary and the audit",
        "tycoon up --nats nats://10.0.0.5:4222     # use a running server",
    ),
    "init": (
        "tycoon init --user alice                  # make alice's key, admit it, reload",
        "tycoon init --user bob --role user        # bob may not run an agent",
        "tycoon init --hosts 4 --agents 2          # keys and tycoon.toml for a deployment",
    ),
    "status": (
        "tycoon status                             # every service, and where the CLI looked",
        "tycoon status --check && echo healthy     # exit 1 unless bank, SLS, host answer",
        "tycoon status --json | jq .services       # one JSON document",
    ),
    "top": (
        "tycoon --as operator top                  # q or Ctrl-C quits",
        "tycoon --as operator top --duration 30    # exit after 30 s",
    ),
    "tap": (
        "tycoon --as operator tap                  # every event; Ctrl-C stops",
        "tycoon --as operator tap --count 5        # stop after five events",
        "tycoon --as operator tap 'tycoon.price.>' --json | jq .body",
    ),
    "hosts": (
        "tycoon hosts                              # cheapest CPU capacity first",
        "tycoon hosts --resource memory --limit 5",
        "tycoon hosts --json | jq '.[0]'",
    ),
    "keys": ("tycoon keys list", "tycoon keys show alice --json"),
    "keys new": ("tycoon keys new carol",),
    "keys list": ("tycoon keys list --json",),
    "keys show": ("tycoon keys show alice",),
    "bank open": ("tycoon --as alice bank open",),
    "bank mint": ("tycoon --as operator bank mint alice 100",),
    "bank transfer": ("tycoon --as alice bank transfer bob 12.5 --memo lunch",),
    "bank balance": ("tycoon --as alice bank balance", "tycoon --as alice bank balance --json"),
    "bank history": ("tycoon --as alice bank history --limit 10",),
    "bank audit": ("tycoon bank audit --state .tycoon",),
    "host bid": (
        "tycoon-pub --as alice bid host-1 1h cpu:1,0.1,1.0 memory:1,512MB,1GB",
        "tycoon --as alice host bid host-1 30m cpu:2,0,1   # the same, long form",
    ),
    "host fund": ("tycoon-pub --as alice fund host-1 25",),
    "host status": ("tycoon-pub --as alice status host-1",),
    "host refund": ("tycoon-pub --as alice refund host-1",),
    "agent run": (
        "tycoon --as alice agent run --budget 50 --deadline 30m   # Ctrl-C pauses; rerun resumes",
        "tycoon --as alice agent run --budget 10 --deadline 2m --json",
    ),
    "history": ("tycoon history host-1 --since 10m", "tycoon history host-1 --plot price.png"),
    "sim": ("tycoon sim equilibrium --users 10 --hosts 50",
            "tycoon sim dynamic --plot /tmp/plots"),
    "demo": ("tycoon demo                               # signed request/reply, two processes",),
}
