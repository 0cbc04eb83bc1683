"""The gateway daemon: verify, store, then ack (docs/gateway.md).

A paho-mqtt 2.x client (CallbackAPIVersion.VERSION2, MQTT 3.1.1, persistent
session) logged in as `gateway` subscribes to `lc/+/+/up` and `lc/+/+/status`
with QoS 1. paho's thread only queues what arrives (a bounded inbox); the ingest
thread takes up to GROUP_MAX messages at a time and, in arrival order, finds
each reader by the topic and verifies the message with link.py (MAC, reader,
building, replay against the counter stored in SQLite). The RIDES messages of
a group are stored in ONE transaction (store.Store.store_batches: one fsync for
the group, each message in its own savepoint), and only after that commit each
reader gets an ACK on its `down` topic, sealed with the gateway's own strictly
increasing down counter (downcounter.py: never reused, docs/link.md).
STATUS messages update the readers table (after the rides before them).

Time sync (docs/gateway.md, "Clock"): on a verified STATUS the gateway
publishes a TIME (the gateway's clock in liftcard epoch seconds, same down
counter) when the reader says its clock is not synced, when it is the reader's
first STATUS since the gateway started or since its Last Will or a reboot (a
new boot or a smaller uptime), or when the last TIME to it is older than
TIME_SYNC_INTERVAL_S. STATUS carries no reader time, so no clock drift is
measured.

NTAG SUN counters (docs/link.md, SUNCTR): a verified SUNCTR from a reader
is max-merged into sun_counters of its building (one transaction, with its
link counter); the entries that went up are forwarded at once, as a down
SUNCTR (QoS 1, the same down counter), to every other configured reader of
that building. At a reader's first STATUS since the gateway started, its Last
Will, its reboot or the gateway's own reconnect to the broker, the gateway
sends it the building's table (the SUN_TABLE_SIZE most recent counters, most
recent first, <= 64 per message), so a reader that was offline catches up.
Card ids are never logged.

Reload (SIGHUP, `systemctl reload`; docs/gateway.md, "Reload"): the main
thread re-reads and checks the whole config; a refused one is logged in one
line and the daemon runs on with the old. A good one goes through the inbox,
so the ingest thread applies its readers between two messages: the
messages before it are handled with the old readers, those after with the new
(new readers known, removed ones refused as unknown, a new key used). What
the daemon set up at start from the rest (database, broker login, upstream,
console, retention, cards) stays as it was and is logged as needing a
restart. `run` keeps its pid in data_dir/gateway.pid, so the reader commands
can send the SIGHUP themselves (signal_reload).

The MQTT client is an mqttservice.MqttService. Events go to the logger
`liftcard.gateway` (logs.py: one JSON object per line): refused payloads with
reader_id and reason, never a card id, key, MAC or body.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from pathlib import Path

from liftcard_protocol import link
from liftcard_protocol.codes import Flag, Result
from liftcard_protocol.epoch import epoch_from_unix
from liftcard_protocol.errors import FormatError
from liftcard_protocol.fields import U32
from liftcard_protocol.topics import parse_reader_topic, reader_topics

from . import refusals
from .cardservice import CardService
from .config import GatewayConfig, GatewayConfigError, load_config, reader_changes, restart_only_changes
from .console import Console
from .db import explain
from .downcounter import DownCounter
from .logs import events
from .mqttservice import MqttService, MqttSettings
from .store import ReplayError, Store, StoreError
from .retention import Retention
from .upstream import Upstream

LOGGER = "liftcard.gateway"

SUBSCRIPTIONS = [("lc/+/+/up", 1), ("lc/+/+/status", 1)]
# A Last Will (the broker's, docs/link.md) on a status topic: not a link message.
OFFLINE_PAYLOADS = (b"", b"offline")
# Resend a TIME to a synced reader at least this often (checked at its STATUS,
# which a reader sends every 60 s). A constant, not a config key (yet).
TIME_SYNC_INTERVAL_S = 600.0
# Messages handled as one group (their ride batches share one SQLite commit),
# and how many may wait for the ingest thread.
GROUP_MAX = 64
# The inbox's "topic" of a card update from the bank (upstream.on_card_update).
CARD_UPDATE = object()
# The inbox's "topic" of the gateway's own (re)connect to the broker: every
# reader is asked to resend from the first seq this database lacks.
RESYNC = object()
# The inbox's "topic" of a reloaded config (SIGHUP): its readers replace the old.
RELOAD = object()
# data_dir/PID_FILE: the pid of `liftcard-gateway run`, for signal_reload.
PID_FILE = "gateway.pid"
# A reader whose heartbeat is ahead of the database is asked for a RESEND at
# most this often (its resend takes a few batches; heartbeats come every 60 s).
RESEND_INTERVAL_S = 30.0
# The reader's NTAG counter table size (firmware/liftcard/sunctr.py): the
# catch-up sends at most this many counters, the most recent first.
SUN_TABLE_SIZE = 128
INBOX_MAX = 1024


def broker_settings(cfg: GatewayConfig) -> MqttSettings:
    """The local broker link: MQTT 3.1.1, persistent session, username and password."""
    b = cfg.broker
    return MqttSettings(b.host, b.port, b.client_id, b.keepalive, username=b.username, password=b.password)


class Gateway:
    """log: the logger for the daemon's events (default `liftcard.gateway`); when
    given, the card service and the upstream log to it too."""

    def __init__(self, cfg: GatewayConfig, log: logging.Logger | None = None):
        self.cfg = cfg
        self.log = events(log or LOGGER)
        self.store = Store(cfg.db_path)
        for r in cfg.readers.values():
            self.store.ensure_reader(r.reader_id, r.building_id, r.first_seq)
        self._keys = {rid: link.LinkKeys(r.key.value) for rid, r in cfg.readers.items()}
        self._down = DownCounter(self.store)
        # reader_id -> (monotonic time of the last TIME sent, boot, uptime) of
        # the reader's last STATUS; dropped on a Last Will. In memory only: a
        # gateway restart re-syncs every reader at its next STATUS.
        self._clock: dict[int, tuple] = {}
        # Readers sent the building's SUN counter table since their (re)connect.
        self._sun_synced: set[int] = set()
        # reader_id -> monotonic time of the last RESEND sent to it.
        self._resent: dict[int, float] = {}
        self._stop = threading.Event()
        self._hup = threading.Event()  # SIGHUP arrived: reload at the main loop's next turn
        self.console = None  # console.Console once run() started it ([console])
        self.retention = None  # retention.Retention once run() started it ([retention])
        self._inbox: queue.Queue = queue.Queue(INBOX_MAX)
        self._ingest_done = threading.Event()
        self._ingester = threading.Thread(target=self._ingest, name="ingest", daemon=True)
        self.mqtt = MqttService(
            broker_settings(cfg), SUBSCRIPTIONS, self.log, self._on_message, on_connect=self._on_connect
        )
        self.client = self.mqtt.client
        # docs/cards.md: the card database and whitelist distribution ([cards]; None: none).
        self.cards = None
        if cfg.cards is not None:
            self.cards = CardService(cfg, log)
        # The upstream to the bank ledger (docs/upstream.md), when [upstream] is configured.
        self.upstream = None
        if cfg.upstream is not None:
            self.upstream = Upstream(
                cfg.upstream,
                cfg.db_path,
                log,
                on_card_update=self._queue_card_update if self.cards is not None else None,
            )
        # reader_id -> the whitelist version its last STATUS reported: a card
        # update is pushed at once to these readers. Seeded from the database,
        # so after a restart the readers still online need not wait for their
        # next heartbeat.
        self._held: dict[int, int] = {
            rid: v
            for rid, v in self.store.conn.execute(
                "SELECT reader_id, wl_version FROM readers WHERE online=1 AND wl_version IS NOT NULL"
            )
            if rid in cfg.readers
        }

    # -- down counter -----------------------------------------------------------
    def _next_counter(self) -> int:
        return self._down.next()

    # -- time sync ----------------------------------------------------------------
    def _time_reason(self, reader_id: int, st, mono: float) -> str | None:
        """Why a TIME should go to this reader now (None: no need)."""
        prev = self._clock.get(reader_id)
        if not st.flags & link.ST_CLOCK_SYNCED:
            return "unsynced"
        if prev is None:
            return "connect"
        sent_at, boot, uptime = prev
        if boot != st.boot or st.uptime < uptime:
            return "reboot"
        if sent_at is None or mono - sent_at >= TIME_SYNC_INTERVAL_S:
            return "periodic"
        return None

    def _maybe_send_time(self, reader_id: int, building_id: int, st) -> None:
        mono = time.monotonic()
        reason = self._time_reason(reader_id, st, mono)
        prev = self._clock.get(reader_id)
        sent_at = prev[0] if prev else None
        if reason is not None:
            epoch_s = epoch_from_unix(int(time.time()))
            if not 0 < epoch_s <= U32:
                # The gateway's own clock is before 2024 (a Pi without RTC or NTP):
                # sending it would corrupt the reader's clock.
                self.log("time_not_sent", reader_id=reader_id, reason="gateway_clock")
            else:
                msg = link.build_time(self._keys[reader_id], reader_id, building_id, self._next_counter(), epoch_s)
                self.client.publish(reader_topics(building_id, reader_id)["down"], msg, qos=1)
                self.store.record_time_sent(reader_id, epoch_s)
                sent_at = mono
                self.log("time_sent", reader_id=reader_id, epoch_s=epoch_s, why=reason)
        self._clock[reader_id] = (sent_at, st.boot, st.uptime)

    # -- NTAG SUN counters ----------------------------------------------------------
    def _send_sun(self, reader_id: int, building_id: int, entries) -> int:
        """SUNCTR down messages (<= 64 entries each) to one reader; returns how many."""
        n = 0
        for part in link.sun_batches(entries):
            msg = link.build_sunctr(
                self._keys[reader_id], reader_id, building_id, self._next_counter(), part, down=True
            )
            self.client.publish(reader_topics(building_id, reader_id)["down"], msg, qos=1)
            n += 1
        return n

    def _on_sunctr(self, topic: str, reader_id: int, building_id: int, msg) -> None:
        try:
            raised = self.store.merge_sun(reader_id, building_id, msg.counter, msg.sun)
        except ReplayError:
            self._refuse(reader_id, "replay", topic)
            return
        to = []
        if raised:
            for rid, rc in sorted(self.cfg.readers.items()):
                if rc.building_id == building_id and rid != reader_id:
                    try:
                        self._send_sun(rid, building_id, raised)
                        to.append(rid)
                    except Exception as e:  # one reader must not stop the others
                        self.log("error", reader_id=rid, error=type(e).__name__)
        self.log("sun_counters", reader_id=reader_id, entries=len(msg.sun), raised=len(raised), forwarded_to=to)

    def _send_sun_table(self, reader_id: int, building_id: int) -> None:
        table = self.store.sun_counters(building_id, SUN_TABLE_SIZE)
        sent = self._send_sun(reader_id, building_id, table) if table else 0
        self._sun_synced.add(reader_id)
        if table:
            self.log("sun_table_sent", reader_id=reader_id, entries=len(table), messages=sent)

    # -- a database behind its readers (a restored backup) ---------------------------
    def _send_resend(self, reader_id: int, building_id: int, from_seq: int, why: str) -> None:
        msg = link.build_resend(self._keys[reader_id], reader_id, building_id, self._next_counter(), from_seq)
        self.client.publish(reader_topics(building_id, reader_id)["down"], msg, qos=1)
        self._resent[reader_id] = time.monotonic()
        self.log("resend_sent", reader_id=reader_id, from_seq=from_seq, why=why)

    def _resend_all(self) -> None:
        """At each (re)connect to the broker: every reader whose run this
        database knows is asked to resend from the first seq it lacks. A reader
        acknowledged no further ignores it (its unacked backlog comes anyway);
        one acknowledged further (this database was restored from a backup)
        sends again what it still holds."""
        for reader_id, rc in sorted(self.cfg.readers.items()):
            try:
                row = self.store.reader(reader_id)
                if row is not None and row["acked_seq"] is not None:
                    self._send_resend(reader_id, rc.building_id, row["acked_seq"] + 1, "connect")
            except Exception as e:  # one reader must not stop the others
                self.log("error", reader_id=reader_id, error=type(e).__name__, message=str(e))

    def _catch_up(self, reader_id: int, building_id: int, st) -> None:
        """A heartbeat with the reader's ack mark and oldest seq held: if it is
        ahead of this database, what the reader no longer holds becomes a lost
        gap (logged), the ack moves past it, and the reader is asked to resend
        the rest (store.Store.reader_ahead)."""
        got = self.store.reader_ahead(reader_id, st.acked_seq, st.oldest_seq)
        if got is None:
            return
        from_seq, lost, acked = got
        if lost is not None:
            self.log("rides_lost", reader_id=reader_id, from_seq=lost[0], to_seq=lost[1], acked_seq=acked)
            msg = link.build_ack(self._keys[reader_id], reader_id, building_id, self._next_counter(), acked)
            self.client.publish(reader_topics(building_id, reader_id)["down"], msg, qos=1)
        sent = self._resent.get(reader_id)
        if from_seq is not None and (sent is None or time.monotonic() - sent >= RESEND_INTERVAL_S):
            self._send_resend(reader_id, building_id, from_seq, "status")

    # -- card database ------------------------------------------------------------
    def _offer_cards(self, reader_id: int, building_id: int, held: int, capacity: int | None = None) -> None:
        down = reader_topics(building_id, reader_id)["down"]
        self.cards.on_status(
            reader_id,
            building_id,
            held,
            lambda make: self.client.publish(down, make(self._next_counter()), qos=1),
            capacity=capacity,
        )

    def _queue_card_update(self, payload: bytes) -> None:
        # From the upstream's network thread: applied on the ingest thread,
        # which alone writes to the store and publishes down messages, in
        # order with the readers' messages (and without holding up the bank
        # link's keepalive while a large update is verified).
        self._inbox.put((CARD_UPDATE, payload))

    def _card_update(self, payload: bytes) -> None:
        """A signed card update from the bank (the ingest thread). Once applied, every reader seen since the start gets its DELTA or list
        now rather than at its next heartbeat: a revoked card stops working in
        seconds."""
        res = self.cards.apply_update(payload)
        if not res.applied:
            return
        for reader_id, held in list(self._held.items()):
            rc = self.cfg.readers.get(reader_id)
            if rc is not None and held < res.version:
                try:
                    self._offer_cards(reader_id, rc.building_id, held)
                except Exception as e:  # one reader must not stop the others
                    self.log("error", reader_id=reader_id, error=type(e).__name__)

    # -- mqtt callbacks (paho's thread) ---------------------------------------------
    def _on_connect(self, session_present: bool) -> None:
        # Forwards published while the gateway was away from the broker were
        # lost: every reader gets the building's table at its next STATUS.
        self._sun_synced.clear()
        self._inbox.put((RESYNC, None))

    def _refuse(self, topic_reader, reason: str, topic: str, **kw) -> None:
        try:  # counted for status, the console and /metrics (refusals.py), before the line says so
            refusals.record(self.store.conn, topic_reader, reason, topic_reader in self.cfg.readers)
        except Exception as e:  # counting it must not stop the ingest; the refusal is still logged
            self.log("error", where="refusals", error=type(e).__name__, message=str(e))
        self.log("refused", reader_id=topic_reader, reason=reason, topic=topic, **kw)

    def _on_message(self, topic: str, payload: bytes) -> None:
        # Handled on the ingest thread, in arrival order. The inbox is bounded:
        # when SQLite falls behind, paho's thread waits here and the broker
        # holds the rest (QoS 1), so memory stays bounded.
        self._inbox.put((topic, payload))

    def _ingest(self) -> None:
        """Take what has arrived, up to GROUP_MAX messages, and handle it as one
        group: the ride batches among them share one SQLite commit."""
        inbox = self._inbox
        while True:
            try:
                first = inbox.get(timeout=0.2)
            except queue.Empty:
                if self._ingest_done.is_set():
                    return
                continue
            group = [first]
            while len(group) < GROUP_MAX:
                try:
                    group.append(inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self.handle_many(group)
            except Exception as e:  # never let one group stop the loop; the readers resend
                self.log("error", topic=str(group[0][0]), messages=len(group), **self._why(e))

    def _why(self, e: BaseException) -> dict:
        """An error's log fields: its type, and for the database or a file its
        message and the file (a full disk must say so, not just
        OperationalError), with db.explain's cause when it finds one."""
        out = {"error": type(e).__name__}
        if isinstance(e, sqlite3.Error):
            out.update(message=str(e), file=str(self.cfg.db_path))
            cause = explain(self.cfg.db_path, e)
            if cause:
                out["cause"] = cause
        elif isinstance(e, OSError):
            out["message"] = e.strerror or str(e)
            if e.filename:
                out["file"] = str(e.filename)
        return out

    def handle(self, topic: str, payload: bytes) -> None:
        """Handle one message now (the ingest thread, tests)."""
        self.handle_many([(topic, payload)])

    def handle_many(self, messages) -> None:
        """Handle messages in order. Verified RIDES messages are held back and
        stored together (Store.store_batches: one transaction), flushed before
        any message that writes to the store itself, and at the end; each
        reader gets its ACK only after that commit."""
        rides = []
        for topic, payload in messages:
            try:
                if topic is CARD_UPDATE:
                    self._store_rides(rides)
                    self._card_update(payload)
                    continue
                if topic is RESYNC:
                    self._store_rides(rides)
                    self._resend_all()
                    continue
                if topic is RELOAD:
                    # Held-back batches are acked under the keys they were verified with.
                    self._store_rides(rides)
                    self._apply_readers(payload)
                    continue
                got = self._verify(topic, payload, rides)
            except Exception as e:  # one bad message must not take its group with it
                self.log("error", topic=str(topic), **self._why(e))
                continue
            if got is not None:
                rides.append(got)
        self._store_rides(rides)

    def _verify(self, topic: str, payload: bytes, rides: list):
        """A verified RIDES message as (topic, reader_id, building_id, msg) for
        the caller to store; any other message is handled here (None)."""
        parsed = parse_reader_topic(topic)
        if parsed is None or parsed[2] == "down":
            self._refuse(None, "topic", topic)
            return
        building_id, reader_id, leaf = parsed
        rc = self.cfg.readers.get(reader_id)
        if rc is None:
            self._refuse(reader_id, "unknown_reader", topic)
            return
        if rc.building_id != building_id:
            self._refuse(reader_id, "topic", topic)
            return
        if leaf == "status" and payload in OFFLINE_PAYLOADS:
            self._store_rides(rides)
            self.store.mark_offline(reader_id)
            self._held.pop(reader_id, None)
            self._clock.pop(reader_id, None)  # its next STATUS is a (re)connect: sync again
            self._sun_synced.discard(reader_id)
            self.log("reader_offline", reader_id=reader_id)
            return
        try:
            last = self.store.last_counter(reader_id)
            msg = link.parse(self._keys[reader_id], payload, reader_id, building_id, link.UP, last)
        except FormatError as e:
            self._refuse(reader_id, e.reason, topic)
            return
        allowed = (link.RIDES, link.SUNCTR_UP) if leaf == "up" else (link.STATUS,)
        if msg.kind not in allowed:
            self._refuse(reader_id, "kind", topic)
            return
        want = msg.kind
        if want == link.RIDES:
            return topic, reader_id, building_id, msg
        self._store_rides(rides)  # earlier batches first: the store sees messages in order
        if want == link.SUNCTR_UP:
            self._on_sunctr(topic, reader_id, building_id, msg)
            return None
        if want == link.STATUS:
            try:
                self.store.store_status(reader_id, msg.counter, msg.status)
            except ReplayError:
                self._refuse(reader_id, "replay", topic)
                return
            st = msg.status
            synced = bool(st.flags & link.ST_CLOCK_SYNCED)
            self.log(
                "status",
                reader_id=reader_id,
                backlog=st.backlog,
                wl_version=st.wl_version,
                free_heap=st.free_heap,
                uptime=st.uptime,
                clock_synced=synced,
                drift_s=(st.time - epoch_from_unix(int(time.time()))) if synced else None,
            )
            if st.acked_seq is not None:
                self._catch_up(reader_id, building_id, st)
            prev = self._clock.get(reader_id)
            if prev is None or prev[1] != st.boot or st.uptime < prev[2]:
                self._sun_synced.discard(reader_id)  # a (re)connect or a reboot: catch up
            self._maybe_send_time(reader_id, building_id, st)
            if reader_id not in self._sun_synced:
                self._send_sun_table(reader_id, building_id)
            self._held[reader_id] = st.wl_version
            if self.cards is not None:  # a reader behind the card database gets a DELTA or the full list
                self._offer_cards(reader_id, building_id, st.wl_version, st.wl_capacity or 0)
        return None

    def _store_rides(self, pending: list) -> None:
        """Store the held-back RIDES messages in one transaction, then ack each;
        empties `pending`."""
        if not pending:
            return
        batch, pending[:] = list(pending), []
        results = self.store.store_batches([(rid, msg.counter, msg.rides) for _, rid, _, msg in batch])
        # Committed: only now may the readers learn they can reclaim these records.
        if self.upstream is not None:
            self.upstream.wake()
        for (topic, reader_id, building_id, msg), res in zip(batch, results):
            if isinstance(res, StoreError):
                self._refuse(reader_id, "replay" if isinstance(res, ReplayError) else "unknown_reader", topic)
                continue
            for g in res.new_gaps:
                self.log("gap", reader_id=reader_id, from_seq=g[0], to_seq=g[1])
            # UID-only cards are copyable: the operator should know which
            # readers let them ride. A reader with legacy mode off still logs
            # the taps it refused (LEGACY_DISABLED, flag set too): those are
            # the policy working, not a reader that lets such cards ride.
            legacy = sum(1 for r in msg.rides if r.flags & Flag.LEGACY_UID and r.result == Result.GRANTED)
            refused = sum(1 for r in msg.rides if r.flags & Flag.LEGACY_UID and r.result != Result.GRANTED)
            if legacy:
                self.log("legacy_rides", reader_id=reader_id, rides=legacy)
            if refused:
                self.log("legacy_refused", reader_id=reader_id, rides=refused)
            ack = link.build_ack(self._keys[reader_id], reader_id, building_id, self._next_counter(), res.ack_seq)
            self.client.publish(reader_topics(building_id, reader_id)["down"], ack, qos=1)
            self.log(
                "stored",
                reader_id=reader_id,
                rides=len(msg.rides),
                inserted=res.inserted,
                duplicates=res.duplicates,
                ack_seq=res.ack_seq,
                corrected=res.corrected,
            )

    # -- running ------------------------------------------------------------------
    def stop(self, *_a) -> None:
        self._stop.set()

    def request_reload(self, *_a) -> None:
        """Re-read the config soon (SIGHUP's handler: the main loop does the
        reading, not the signal handler)."""
        self._hup.set()

    def run(self, install_signals: bool = True) -> int:
        """Until stop(). install_signals: SIGTERM and SIGINT stop, SIGHUP
        reloads, and data_dir/gateway.pid names this process (the program's
        own daemon; not a daemon in a test's thread)."""
        pid_file = None
        if install_signals:
            # SIGHUP's default action ends the process: handled first of all.
            signal.signal(signal.SIGHUP, self.request_reload)
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
            pid_file = self._write_pid()
        self.log("starting", readers=len(self.cfg.readers))
        for line in self.store.repaired:
            self.log("db_repaired", detail=line)
        self._ingester.start()
        self.mqtt.start()
        if self.upstream is not None:
            self.upstream.start()
        self._start_extras()
        try:
            while not self._stop.wait(0.2):
                if self._hup.is_set():
                    self._hup.clear()
                    self.reload()
        finally:
            self.shutdown()
            if pid_file is not None:
                _remove_pid(pid_file)
        return 0

    def _write_pid(self) -> Path | None:
        """data_dir/gateway.pid (written whole, by rename); None if it cannot be
        written (the daemon runs on; the reader commands then say how to reload)."""
        p = self.cfg.data_dir / PID_FILE
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_text("%d\n" % os.getpid())
            os.replace(tmp, p)
        except OSError as e:
            self.log("error", where="pid_file", error=type(e).__name__, message=e.strerror or str(e), file=str(p))
            return None
        return p

    # -- reload (SIGHUP) -------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read and check the whole config (gateway.toml and readers_dir).
        Refused: one line naming the key (config.py never puts a secret in
        it), the old config stays. Accepted: what needs a restart is logged
        and kept; the readers go to the ingest thread (RELOAD). True if accepted."""
        try:
            new = load_config(self.cfg.path)
        except GatewayConfigError as e:
            self.log("config_refused", key=e.key, error=str(e), file=str(self.cfg.path))
            return False
        except Exception as e:  # a reload must never take the daemon down
            self.log("config_refused", key="", error=type(e).__name__, file=str(self.cfg.path))
            return False
        keep = restart_only_changes(self.cfg, new)
        if keep:
            self.log("config_needs_restart", keys=keep, message="needs a restart: the old values stay until then")
        self._inbox.put((RELOAD, new))
        return True

    def _apply_readers(self, new: GatewayConfig) -> None:
        """The ingest thread: the reloaded config's readers replace the old.
        A reader removed, re-keyed or moved to another building loses what
        the daemon remembers of it, as at a restart: its next STATUS is a
        (re)connect (TIME, the building's SUN table, its whitelist, under its
        new key)."""
        ch = reader_changes(self.cfg.readers, new.readers)
        try:
            for rid in ch.added + ch.changed:
                rc = new.readers[rid]
                self.store.ensure_reader(rid, rc.building_id, rc.first_seq)
        except Exception as e:  # the database refused: the old readers stay, a later SIGHUP tries again
            self.log("error", where="reload", **self._why(e))
            return
        forget = ch.removed + ch.rekeyed + ch.changed
        for rid in forget:
            self._clock.pop(rid, None)
            self._sun_synced.discard(rid)
            self._resent.pop(rid, None)
            self._held.pop(rid, None)
        self._keys = {rid: link.LinkKeys(r.key.value) for rid, r in new.readers.items()}
        self.cfg = dataclasses.replace(
            self.cfg, readers=new.readers, readers_dir=new.readers_dir, enrolment_dir=new.enrolment_dir
        )
        if self.cards is not None:
            self.cards.use_readers(new.readers, forget)
        if self.console is not None:  # its pages and /metrics show the config's readers
            self.console.cfg = self.cfg
        self.log(
            "config_reloaded",
            readers=len(new.readers),
            added=len(ch.added),
            removed=len(ch.removed),
            rekeyed=len(ch.rekeyed),
            changed=len(ch.changed),
        )

    def _start_extras(self) -> None:
        """The web console and the retention timer, when configured: a console
        that cannot listen is logged and the daemon runs on without it."""
        if self.cfg.retention is not None:
            self.retention = Retention(self.cfg.retention, self.cfg.db_path, self.log).start()
        if self.cfg.console is not None:
            try:
                self.console = Console(self.cfg.console, self.cfg, self.log).start()
            except OSError as e:
                self.log("error", where="console", error=type(e).__name__, message=str(e))

    def shutdown(self) -> None:
        self._stop.set()
        for extra in (self.console, self.retention):
            if extra is not None:
                extra.stop()
        # The ingest thread keeps draining while paho's stops (paho may be
        # waiting on a full inbox), then finishes what has arrived.
        self.mqtt.stop()
        self._ingest_done.set()
        if self._ingester.is_alive():
            self._ingester.join(30)
        if self.upstream is not None:
            self.upstream.stop()
        self.store.close()
        if self.cards is not None:
            self.cards.close()
        self.log("stopped")

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once connected and subscribed."""
        return self.mqtt.wait_ready(timeout)


def _remove_pid(p: Path) -> None:
    """Remove the pid file if it still names this process (a second daemon on
    the same data_dir may have written its own since)."""
    try:
        if p.read_text().strip() == str(os.getpid()):
            p.unlink()
    except OSError:
        pass


def _is_gateway_run(pid: int) -> bool:
    """pid is a `liftcard-gateway run` (or `python -m liftcard_gateway run`):
    a stale pid file whose pid now belongs to another program is never signalled."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return False
    prog = [i for i, a in enumerate(argv) if a == "liftcard_gateway" or os.path.basename(a) == "liftcard-gateway"]
    return bool(prog) and "run" in argv[prog[0] + 1 :]


def signal_reload(data_dir: Path) -> int | None:
    """SIGHUP to the daemon whose pid file is in data_dir, if that pid is a
    running `liftcard-gateway run` this user may signal; its pid, or None
    (none running, or not ours to signal: the caller says how to reload)."""
    try:
        text = (Path(data_dir) / PID_FILE).read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not _is_gateway_run(int(text)):
        return None
    try:
        os.kill(int(text), signal.SIGHUP)
    except OSError:
        return None
    return int(text)
