# The uplink's TLS context (docs/uplink.md, "TLS on the local link"): mbedTLS
# through MicroPython's `tls` module (the C module under micropython-lib's
# `ssl`, without its wrapper on the heap), the broker's certificate required
# and checked against the CA file on flash.
#
# The context is one block of about 3 KB on the heap. Once the NFC stack and
# the uplink's code are loaded, the 192K heap has no free block that large
# (docs/board.md, "TLS"), so Reader makes it early, before the NFC stack
# (early()), and keeps it for the boot; the uplink loads the CA into it at its
# first connect (prepare()).

import gc
import os

from micropython import const

_CA_MAX = const(4096)  # the largest CA file read (a DER certificate is under 2 KB)
_SOCKET_BYTES = const(1280)  # a TLS socket object on the heap, with room to spare


def new():
    import tls

    gc.collect()
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    return ctx


_reserve = None  # held from early() until the first TLS socket takes its place


def early(reader):
    # At a config with uplink.tls, before the NFC stack: the context, if the
    # heap has the block (otherwise prepare() tries again at a connect), and
    # a block kept free for the TLS socket each connect makes (about 1 KB):
    # freed just before the first one, which the allocator then puts there.
    global _reserve
    if getattr(reader, "tls_ctx", None) is None:
        try:
            reader.tls_ctx = new()
            reader.tls_ca = None
            _reserve = bytearray(_SOCKET_BYTES)
        except MemoryError:
            gc.collect()


def release():
    # Before each TLS socket: the reserve, or the last socket's block, free
    # again (a collection, so the closed socket's block is found).
    global _reserve
    _reserve = None
    gc.collect()


def prepare(reader, name):
    # (context with the CA file `name` loaded, None) or (None, why not). A
    # context that holds another CA file is replaced, never added to.
    ctx = getattr(reader, "tls_ctx", None)
    if ctx is not None and reader.tls_ca == name:
        return ctx, None
    try:
        n = os.stat(name)[6]
    except OSError:
        return None, "tls: no CA file %s on flash" % name
    if n > _CA_MAX:
        return None, "tls: CA file %s is %d bytes, more than %d" % (name, n, _CA_MAX)
    with open(name, "rb") as f:
        der = f.read()
    if ctx is None or reader.tls_ca is not None:
        reader.tls_ctx = None
        ctx = reader.tls_ctx = new()
    reader.tls_ca = None
    try:
        ctx.load_verify_locations(der)
    except ValueError:
        return None, "tls: CA file %s is not a DER certificate" % name
    reader.tls_ca = name
    return ctx, None
