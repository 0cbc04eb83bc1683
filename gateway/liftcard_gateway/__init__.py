"""liftcard gateway: the Raspberry Pi daemon (docs/gateway.md) that stores the
readers' rides and forwards them to the bank, and sends whitelists, time and
card changes down. The byte formats it speaks are in liftcard_protocol."""
