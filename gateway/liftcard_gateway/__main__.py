"""liftcard-gateway: `run --config gw.toml` or `status --config gw.toml` (docs/gateway.md)."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from .config import GatewayConfigError, load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="liftcard-gateway", description="liftcard Raspberry Pi gateway")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("run", "run the daemon (until SIGTERM/SIGINT)"),
                       ("status", "print the readers table from the database")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="the gateway's TOML config")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except GatewayConfigError as e:
        print(f"liftcard-gateway: config error: {e}", file=sys.stderr)
        return 2
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
