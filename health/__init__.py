"""Battery health across a pack's second life (issue 15; docs/battery-health.md).

Pure, streaming estimators (:mod:`health.analyser`: charge sessions, capacity by coulomb counting
between SOC anchors, resistance from current steps, SOH, fade, self-discharge, energy) and the
second-life grading (:mod:`health.grading`, P-5.1.1.3/4, D-4.2); the runner (:mod:`health.runner`)
reads the stored stream from InfluxDB, writes ``charge_session`` and ``battery_health`` points and
pushes limit alerts to Alertmanager; ``cascade health analyse|report`` is its command line.
"""
