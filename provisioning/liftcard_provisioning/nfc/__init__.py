"""liftcard NFC, host side (CPython): the card cryptography, the credential
formats, the PN532 frame codec and host driver, the DESFire host commands, the
tap procedure and personalisation. The technicians' tool runs on it; the
MicroPython reader follows it byte for byte. See docs/nfc.md."""
