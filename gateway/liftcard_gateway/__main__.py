"""liftcard-gateway: `run`, `status`, `cards import FILE | cards status`, each with `--config gw.toml` (docs/gateway.md, docs/cards.md)."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from .config import GatewayConfigError, load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="liftcard-gateway", description="liftcard Raspberry Pi gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("run", "run the daemon (until SIGTERM/SIGINT)"),
                       ("status", "print the readers table (and the upstream backlog) from the database")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="the gateway's TOML config")
    # docs/cards.md: the card database fed by the bank's signed card updates
    pc = sub.add_parser("cards", help="the card database: import a signed card update, show versions")
    csub = pc.add_subparsers(dest="cards_cmd", required=True)
    pi = csub.add_parser("import", help="apply a signed card update file to the database")
    pi.add_argument("file", help="the signed update (liftcard-bank update --out ...)")
    pi.add_argument("--config", required=True, help="the gateway's TOML config")
    ps = csub.add_parser("status", help="database version, cards per building, readers' versions")
    ps.add_argument("--config", required=True, help="the gateway's TOML config")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except GatewayConfigError as e:
        print(f"liftcard-gateway: config error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "cards":
        from .cards import main_cards
        return main_cards(args, cfg)
    if args.cmd == "status":
        from .store import Store, format_status
        if not cfg.db_path.exists():
            print(f"liftcard-gateway: no database yet at {cfg.db_path} (run the daemon first)", file=sys.stderr)
            return 1
        st = Store(cfg.db_path)
        try:
            print(format_status(st.status_rows()))
        finally:
            st.close()
        if cfg.upstream is not None:  # what the ledger has not acknowledged yet (docs/upstream.md)
            from .upstream import format_upstream_status, upstream_status
            print("\nupstream to the ledger:")
            print(format_upstream_status(upstream_status(cfg.db_path)))
        return 0
    from .daemon import Gateway
    try:
        gw = Gateway(cfg)
    except OSError as e:
        print(f"liftcard-gateway: cannot open the data directory {cfg.data_dir}: {e.strerror}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        print(f"liftcard-gateway: cannot open the database {cfg.db_path}: {e}", file=sys.stderr)
        return 1
    return gw.run()


if __name__ == "__main__":
    sys.exit(main())
