"""liftcard gateway: the CPython side of the reader formats (docs/formats.md).

`liftcard_gateway.formats` encodes and checks every byte structure a reader
reads or writes: card records, whitelists and deltas, ride records, the spend
checkpoint and the reader configuration.
"""
