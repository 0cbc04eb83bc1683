"""Configuration files as the programs read them: the gateway's TOML (its
[broker], [[readers]] and whatever sections follow), its [upstream] section,
and the reference ledger's TOML. Secret files (the broker password, reader
keys) are written 0600, as the gateway's config check requires."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BrokerLogin:
    """Where a gateway finds its local broker, for a config without a running
    MosquittoInstance (which has the same host, port and credentials)."""

    host: str = "127.0.0.1"
    port: int = 1883
    password: str = "x" * 16
    credentials: dict = field(init=False)

    def __post_init__(self):
        self.credentials = {"gateway": self.password}


def _secret(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


def write_gateway_config(
    dir: str | os.PathLike,
    broker,
    keys: dict,
    readers: dict,
    *,
    extra: str = "",
    client_id: str | None = None,
    first_seq: int | None = None,
    gateway_id: str | None = None,
    compound_id: int | None = None,
) -> Path:
    """dir/gw.toml (dir created): data in dir/data, the local broker `broker`
    (.host, .port, .credentials["gateway"]; password in dir/broker.pass), one
    [[readers]] per reader_id -> building_id of `readers` with its key from
    `keys` (dir/reader-<id>.key, hex) and `first_seq` if given, then `extra`
    (further sections: [upstream], [cards]). A fresh client id unless given.
    The gateway's identity, `gateway_id` and `compound_id`, goes into [gateway]
    when given ([upstream] needs the first, [cards] the second)."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    _secret(dir / "broker.pass", broker.credentials["gateway"] + "\n")
    ident = "".join(
        ['gateway_id = "%s"\n' % gateway_id if gateway_id is not None else ""]
        + ["compound_id = %d\n" % compound_id if compound_id is not None else ""]
    )
    text = (
        '[gateway]\n%sdata_dir = "data"\n\n[broker]\nhost = "%s"\nport = %d\nusername = "gateway"\n'
        'password_file = "broker.pass"\nclient_id = "%s"\n\n'
        % (ident, broker.host, broker.port, client_id or "gw-%s" % secrets.token_hex(6))
    )
    for rid, bid in readers.items():
        kf = dir / ("reader-%d.key" % rid)
        _secret(kf, keys[rid].hex())
        text += '[[readers]]\nreader_id = %d\nbuilding_id = %d\nkey_file = "%s"\n' % (rid, bid, kf.name)
        if first_seq is not None:
            text += "first_seq = %d\n" % first_seq
        text += "\n"
    p = dir / "gw.toml"
    p.write_text(text + extra)
    return p


def upstream_section(pki, bank, gateway_id: str = "gw1", **extra) -> str:
    """The gateway's [upstream] section: the bank broker `bank`, the gateway's
    certificate and signing key from `pki` (devpki.DevPKI), then `extra`
    settings (strings quoted). The gateway id itself goes into [gateway]
    (write_gateway_config's gateway_id)."""
    g = pki.gateways[gateway_id]
    lines = [
        "[upstream]",
        'host = "%s"' % bank.host,
        "port = %d" % bank.port,
        'ca_file = "%s"' % pki.ca_cert,
        'cert_file = "%s"' % g["cert"],
        'key_file = "%s"' % g["key"],
        'signing_key_file = "%s"' % g["signing_key"],
        'ledger_public_key_file = "%s"' % pki.ledger_public_key,
    ]
    for k, v in extra.items():
        lines.append("%s = %s" % (k, '"%s"' % v if isinstance(v, str) else v))
    return "\n".join(lines) + "\n"


def write_ledger_config(
    dir: str | os.PathLike, pki, bank, gateway_ids=("gw1",), data_dir: str = "ledger-data", client_id: str | None = None
) -> Path:
    """dir/ledger.toml for the reference ledger on the bank broker `bank`,
    registering each gateway's public key from `pki`."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    gws = "".join(
        '[[gateways]]\ngateway_id = "%s"\npublic_key_file = "%s"\n\n' % (g, pki.gateways[g]["public_key"])
        for g in gateway_ids
    )
    p = dir / "ledger.toml"
    p.write_text(
        '[ledger]\ndata_dir = "%s"\nsigning_key_file = "%s"\n\n[broker]\nhost = "%s"\nport = %d\n'
        'ca_file = "%s"\ncert_file = "%s"\nkey_file = "%s"\nclient_id = "%s"\n\n'
        '[cards]\ncert_file = "%s"\nkey_file = "%s"\n\n%s'
        % (
            data_dir,
            pki.ledger_signing_key,
            bank.host,
            bank.port,
            pki.ca_cert,
            pki.ledger_cert,
            pki.ledger_key,
            client_id or "ledger-%s" % secrets.token_hex(4),
            pki.cards_cert,
            pki.cards_key,
            gws,
        )
    )
    return p
