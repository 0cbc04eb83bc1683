"""Test equipment for liftcard: what the tests, the demo and the benchmarks
start, configure and wait on. Nothing here is a mock: the brokers are real
Mosquitto processes, the readers the real firmware under the real
MicroPython, the gateway and the ledger the real programs.

One module per idea:

- ``paths``: where the repository's pieces are (firmware, tests, vectors).
- ``wait``: ``wait_for``, polling a condition with a deadline.
- ``procs``: every process the rigs start: the session marker every child
  inherits, stopping a process for sure, the gateway and ledger programs as
  processes, and the scan for processes left behind.
- ``leakcheck``: the pytest plugin that fails a run leaving a process behind.
- ``firmware``: the firmware compiled once (mpybuild) and run under micropython.
- ``reader``: the virtual reader (firmware/main.py, line protocol on stdio)
  and the standard test reader's key, config and cards.
- ``mqttprobe``: "does this broker accept me?" (paho-mqtt: CONNACK code).
- ``mosquitto``: a private Mosquitto on a free loopback port (the local link).
- ``bankbroker``: the bank's TLS Mosquitto (the upstream link).
- ``devpki``: a development PKI (CA, broker, ledger, gateway certificates).
- ``configs``: gateway and ledger configuration files.
- ``rides``: test rides, a gateway database pre-filled with them, the
  ledger's per-reader counts.
- ``simreader``: a CPython reader speaking the link format over MQTT.
- ``minigateway``: a minimal CPython gateway answering a virtual reader.
- ``daemonrig``: the gateway daemon in a thread of the test process.
- ``cards``: signed card updates and their whitelist chunks, for tests.
- ``logcapture``: an event log that keeps its records.
- ``site``: a building (local broker, gateway process, virtual readers).
- ``compoundsite``: a compound (several buildings' readers, the gateway, the bank).
- ``netcut``: a relay that drops one reader's network and restores it.

The product (liftcard_gateway, liftcard_protocol, liftcard_provisioning)
never imports this package.
"""
