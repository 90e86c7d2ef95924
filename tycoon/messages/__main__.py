"""``python -m tycoon.messages``: print the kinds table of docs/protocol.md §6."""

from tycoon.messages import doc_table

print(doc_table())
