"""BLE battery gateway: JBD and Daly BMS packs read over Bluetooth, published upstream over MQTT.

* ``frames``: the pack sample, fragment reassembly, frame errors, plausibility checks
* ``jbd``, ``daly``: the two BMS protocols (frames, checksums, decoding, protection bit maps)
* ``gateway``: scan, schedule a bounded number of connections, poll, reconnect (``cascade gateway``)
* ``uplink``: MQTT publish with a bounded disk buffer (store and forward), exact counters
* ``wire``: the uplink message (``PackReport``) and its reading for the ingest side
* ``emulator``: JBD and Daly packs behind bleak's backend seam (tests, ``--emulate N``)

docs/ble-gateway.md describes the whole.
"""
