"""liftcard's byte formats, codecs and protocol names: the one source of truth
that the gateway, the technicians' CLI, the bank-side tools and the test
vectors share (docs/formats.md, docs/uplink.md, docs/upstream.md,
docs/cards.md). It imports nothing of theirs.

One module per format or idea:

- errors: FormatError, ConfigError and the stable reason codes
- fields: widths, lengths, ids, crc16, mac16 and the field checks
- epoch: the liftcard epoch (2024-01-01 UTC), local days and months
- codes: card status and class, ride result and flags, delta operations
- card: the 16-byte card record
- whitelist: the LCWL file; delta: the LCWD delta and LCWO overlay
- ride: the 32-byte ride record and the ack journal entry
- spend: the LCSP household spend checkpoint
- readerconfig: the reader's config.json rules
- link: the reader <-> gateway link messages (AES-CTR + MAC)
- upstream: the gateway <-> ledger BATCH and ACK (Ed25519)
- cardupdate: the bank's signed card updates (LCCU)
- topics: every MQTT topic name, built and parsed
- keys: Ed25519 key loading and atomic secret-file writes
"""
