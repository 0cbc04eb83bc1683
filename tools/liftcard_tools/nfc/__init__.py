"""liftcard NFC test equipment (CPython): emulated cards, a PN532 emulator on a
pty and the NFC vector generator. They run on the product's host stack
(liftcard_provisioning.nfc), never the reverse. See docs/nfc.md."""
