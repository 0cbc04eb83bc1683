"""liftcard NFC: card cryptography, credential formats, emulated cards, a
PN532 emulator on a pty and a reference PCD (CPython). See docs/nfc.md."""
