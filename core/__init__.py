"""The ground floor: Cascade's domain model and shared kernel.

Everything else builds on this package and it imports nothing else of Cascade's (an
import-linter contract in ``.importlinter`` keeps it so):

* :mod:`core.model`: typed readings, fields with kinds and units, protection flags;
* :mod:`core.targets`: what an alert or a command is about (site, cabinet, slot, battery,
  vehicle, gateway) and alert levels;
* :mod:`core.events`: the typed points that cross seams (alert events, command records);
* :mod:`core.ports`: the Protocols at the seams (source, sink, commander, event handler);
* :mod:`core.errors`, :mod:`core.durations`, :mod:`core.env`: one error base, one duration
  parser, one ``${ENV:-default}`` expander.
"""
