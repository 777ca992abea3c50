"""Cabinet simulator (``cascade simulate``): a fleet of swap cabinets on real Modbus TCP.

- :mod:`simulators.cabinet` — physics and state of one cabinet and its slots
- :mod:`simulators.register_bank` — state ↔ registers through a vendor profile
- :mod:`simulators.scenarios` — fault timelines (``simulators/scenarios/*.yaml``)
- :mod:`simulators.fleet` — cabinets, endpoints, scenario runs, the fleet file
- :mod:`simulators.server` — pymodbus servers and the HTTP control endpoint
- :mod:`simulators.cli` — ``cascade simulate`` options, ``run`` and ``inject_main``

See ``docs/simulator.md``.
"""

__all__: list[str] = []
