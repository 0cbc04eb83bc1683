"""The readers row keeps what the heartbeat says of the reader itself (schema
v7): the signal, the firmware version and the whitelist capacity, NULL when
the reader says 0 (unknown) or its firmware's heartbeat predates them; a
database made before v7 gains the columns, and the overview of such a
database, read-only before the daemon migrated it, still answers."""

from liftcard_gateway import db, overview, schema
from liftcard_gateway.store import Store
from liftcard_protocol import link


def full(**kw):
    args = dict(acked_seq=0, oldest_seq=1, rssi=-58, fw_version=(1, 2, 3), wl_capacity=25548)
    args.update(kw)
    return link.ReaderStatus(60, 90000, 0, 4, **args)


def device(path):
    conn = db.connect(path, readonly=True)
    try:
        r = {x["reader_id"]: x for x in overview.snapshot(conn, upstream=False, cards=False)["readers"]}
    finally:
        conn.close()
    return {rid: (x["rssi"], x["fw_version"], x["wl_capacity"]) for rid, x in r.items()}


def test_heartbeats_old_and_new_and_unknown(tmp_path):
    st = Store(tmp_path / "gateway.db")
    for rid in (1, 2, 3, 4):
        st.ensure_reader(rid, 12)
    st.store_status(1, 1, full())
    st.store_status(2, 1, full(rssi=0, fw_version=(0, 0, 0), wl_capacity=0))  # the reader does not know
    st.store_status(3, 1, link.ReaderStatus(60, 90000, 0, 4, acked_seq=0, oldest_seq=1))  # 36 bytes
    st.store_status(4, 1, full())
    st.store_status(4, 2, link.ReaderStatus(60, 90000, 0, 4))  # flashed back to older firmware: 28 bytes
    st.close()
    assert device(tmp_path / "gateway.db") == {
        1: (-58, "1.2.3", 25548),
        2: (None, None, None),
        3: (None, None, None),
        4: (None, None, None),
    }


def test_a_database_from_before_v7_gains_the_columns(tmp_path):
    path = tmp_path / "gateway.db"
    conn = db.connect(path)
    db.migrate(conn, schema.MIGRATIONS[:6])  # v6, the schema before the heartbeat's device fields
    conn.execute("INSERT INTO readers (reader_id, building_id) VALUES (7, 12)")
    conn.close()
    # Read-only, as the console and `status` read it before the daemon started.
    assert device(path) == {7: (None, None, None)}
    conn = db.connect(path, readonly=True)
    snap = overview.snapshot(conn, upstream=False, cards=True)
    conn.close()
    assert snap["cards"]["readers"][0]["too_big"] is None and snap["cards"]["readers"][0]["capacity"] is None

    st = Store(path)  # migrates
    assert db.user_version(st.conn) == len(schema.MIGRATIONS)
    st.store_status(7, 1, full())
    assert st.conn.execute("SELECT count(*) FROM whitelist_refused").fetchone() == (0,)
    st.close()
    assert device(path) == {7: (-58, "1.2.3", 25548)}
