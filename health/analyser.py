"""The streaming battery-health estimator: feed one battery's readings in time order, get its charge
sessions as they close and its health estimate at any moment. No I/O; one object per battery.

    analyser = BatteryAnalyser("NM48-0001")
    for t_ns, place, pack in readings_of_that_battery:      # core.model.SlotReading, time order
        for session in analyser.feed(t_ns, pack, place):
            ...                                               # a ChargeSession that just ended
    estimate = analyser.estimate()                           # BatteryEstimate (capacity, R, SOH, energy)

What it computes (formulas and error budget in docs/battery-health.md):

* **Coulomb counting** of ``charge_current_a`` (+ charging, − discharging; trapezoids), with energy in
  and out (V·I). A gap longer than ``Settings.max_gap_s`` breaks the count: nothing is bridged.
* **Anchors**, points where the SOC is known without the BMS's own counting: the end of a charge that
  reached full (100 %), and the voltage of a pack rested ``rest_s`` or longer read through the
  chemistry's OCV curve (:mod:`health.ocv`), each with its SOC uncertainty. **Capacity** = Ah counted
  between two anchors ÷ their SOC difference, with its uncertainty from the current sensor's gain and
  offset error and the two anchors' SOC errors; pairs closer than ``min_delta_soc`` are not used.
* **Resistance** = ΔV/ΔI across a current step between two consecutive samples (charge start, end of
  a ride, a cut-off): the pack's DC resistance at the sample interval; the median of the recent steps.
* **Self-discharge**: a pack left full and idle for ``storage_s`` or longer that is then topped up
  to full again lost exactly the Ah the top-up put back.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from core.chemistry import CELLS
from core.model import BatteryState, Chemistry, SlotReading
from health.ocv import cells_in_series, ocv_slope, soc_from_ocv

__all__ = ["Anchor", "BatteryAnalyser", "BatteryEstimate", "CapacityEstimate", "ChargeSession", "Place",
           "Settings"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a reading came from: a cabinet slot, a BLE gateway's slot or a vehicle (``slot`` None)."""

    site: str
    device: str
    slot: int | None = None
    kind: str = "cabinet"  # cabinet | gateway | vehicle


@dataclass(frozen=True, slots=True)
class Settings:
    """Detection limits and the sensor error budget (defaults: a BMS of D-A.4's resolutions)."""

    max_gap_s: float = 3900.0          # longer without a reading: the count breaks (a vehicle off reports 1/h)
    charge_on_c: float = 0.02          # charging above this × nominal Ah (A)
    charge_on_min_a: float = 0.2
    rest_c: float = 0.01               # at rest below this × nominal Ah (A)
    rest_min_a: float = 0.15
    rest_s: float = 1800.0             # rested this long: the voltage is an OCV anchor
    full_soc_sigma: float = 1.0        # SOC error (%) of "full" at the end of a CC-CV charge
    ocv_sigma_v: float = 0.006         # cell OCV error (V): curve fit, relaxation and hysteresis
    max_anchor_sigma: float = 3.0      # anchors with a larger SOC error (%) are not taken (the LFP plateau)
    min_delta_soc: float = 30.0        # capacity only from anchor pairs this far apart (%)
    max_capacity_rel_sigma: float = 0.05  # and only estimates this certain (σ / capacity)
    max_anchor_span_s: float = 3 * 86400.0  # nor across longer (uncounted self-discharge)
    current_gain: float = 0.01         # current sensor gain error (fraction, systematic)
    current_offset_a: float = 0.05     # current sensor offset error (A)
    voltage_resolution_v: float = 0.01  # pack voltage resolution (D-A.4: 0.1 V for a vehicle report)
    step_min_c: float = 0.15           # a current step of at least this × nominal Ah (A) ...
    step_min_a: float = 1.0
    step_max_dt_s: float = 30.0        # ... between two samples at most this far apart
    resistance_window: int = 25        # at most this many steps in the resistance median ...
    resistance_window_cycles: float = 20.0  # ... from the last this many cycles
    capacity_window: int = 8           # at most this many capacity estimates are combined ...
    capacity_window_cycles: float = 20.0  # ... from the last this many cycles
    storage_s: float = 12 * 3600.0     # idle at full this long: the top-up measures self-discharge
    ocv_curve: tuple[float, ...] | None = None  # the cell's own OCV table at health.ocv.SOC_POINTS, if known


@dataclass(slots=True)
class ChargeSession:
    """One charge, from the first sample above the charging current to the last (``reason`` why it ended:
    ``full``, ``stopped``, ``protection``, ``removed``, ``gap`` or ``open`` at the end of the data)."""

    battery_id: str
    place: Place
    start_ns: int
    end_ns: int = 0
    charge_ah: float = 0.0
    energy_in_wh: float = 0.0
    soc_start_pct: float | None = None
    soc_end_pct: float | None = None
    voltage_start_v: float | None = None
    voltage_end_v: float | None = None
    current_max_a: float = 0.0
    temperature_start_c: float | None = None
    temperature_max_c: float | None = None
    temperature_min_c: float | None = None
    cycles: int | None = None
    reason: str = "open"
    capacity_ah: float | None = None       # a capacity estimate this session closed (full anchor), if any
    capacity_sigma_ah: float | None = None

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.end_ns - self.start_ns) / 1e9)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A moment whose SOC is known independently of the BMS: ``ah`` is the coulomb count then."""

    t_ns: int
    soc_pct: float
    sigma_pct: float
    ah: float
    throughput_ah: float
    kind: str  # full | ocv


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """Capacity from one anchor pair, at ``cycles`` (BMS count, else equivalent full cycles)."""

    t_ns: int
    capacity_ah: float
    sigma_ah: float
    delta_soc_pct: float
    cycles: float


@dataclass(frozen=True, slots=True)
class BatteryEstimate:
    """The health of one battery from everything fed so far (``None``: not measurable from this data)."""

    battery_id: str
    place: Place | None
    chemistry: int | None
    nominal_capacity_ah: float | None
    capacity_ah: float | None
    capacity_sigma_ah: float | None
    capacity_estimates: int
    soh_pct: float | None
    soh_sigma_pct: float | None
    soh_bms_pct: float | None
    resistance_mohm: float | None
    resistance_sigma_mohm: float | None
    resistance_steps: int
    resistance_dt_s: float | None
    cycles: float | None
    equivalent_cycles: float
    fade_pct_per_100_cycles: float | None
    self_discharge_pct_per_day: float | None
    recovery_pct: float | None
    energy_in_wh: float
    energy_out_wh: float
    efficiency_pct: float | None
    charge_sessions: int
    last_seen_ns: int
    history: tuple[CapacityEstimate, ...] = ()


@dataclass(slots=True)
class _Rest:
    start_ns: int
    after_full: bool


class BatteryAnalyser:
    """Streaming estimator of one battery; see the module docstring."""

    def __init__(self, battery_id: str, settings: Settings | None = None) -> None:
        self.battery_id = battery_id
        self.s = settings or Settings()
        self._t_ns: int | None = None
        self._v: float | None = None
        self._i: float | None = None
        self._place: Place | None = None
        self.chemistry: int | None = None
        self.nominal_ah: float | None = None
        self._cells: int | None = None
        self._soh_bms: float | None = None
        self._cycles_bms: int | None = None
        self.ah = 0.0                   # net Ah counted since the first reading (gaps excluded)
        self.ah_in = 0.0
        self.ah_out = 0.0
        self.wh_in = 0.0
        self.wh_out = 0.0
        self._session: ChargeSession | None = None
        self.sessions = 0
        self._anchors: deque[Anchor] = deque(maxlen=8)
        self._rest_start_ns: int | None = None
        self._rest_last_v: float | None = None
        self._rest_anchor_done = False
        self._rest_estimate: CapacityEstimate | None = None
        self._estimates: list[CapacityEstimate] = []
        self._steps: deque[tuple[float, float, float]] = deque(maxlen=self.s.resistance_window)  # cycle, Ω, dt
        self._fulls: list[tuple[float, float]] = []  # (wh_in, wh_out) at each full anchor
        self._storage: _Rest | None = None           # idle since a full anchor
        self._topup_from: _Rest | None = None        # a storage that ended with a charge: its top-up
        self._sd_ah = 0.0
        self._sd_days = 0.0
        self._storages: list[tuple[int, int]] = []   # (start, end) of rests >= storage_s

    # -- feeding ------------------------------------------------------------------------------------

    def feed(self, t_ns: int, pack: SlotReading, place: Place) -> list[ChargeSession]:
        """One reading of this battery (time order). Returns the charge sessions it closed."""
        closed: list[ChargeSession] = []
        if self._t_ns is not None and t_ns <= self._t_ns:
            return closed  # a duplicate or out-of-order reading: the count must not run backwards
        self._learn(pack)
        v, i = pack.voltage_v, pack.charge_current_a
        moved = self._place is not None and place != self._place
        if v is None or i is None:
            return closed
        dt = None if self._t_ns is None else (t_ns - self._t_ns) / 1e9
        if dt is not None and dt > self.s.max_gap_s:
            closed += self._close(self._t_ns or t_ns, "gap")
            self._break()
            dt = None
        if dt is not None and self._v is not None and self._i is not None:
            self._count(dt, self._v, self._i, v, i)
            self._step(dt, self._v, self._i, v, i)
        if moved and self._session is not None:
            closed += self._close(self._t_ns or t_ns, "removed")
        self._place = place
        on = self._charge_on()
        if i > on:
            self._end_rest(t_ns)
            if self._session is None:
                self._open(t_ns, pack, place)
            self._track(t_ns, pack)
        else:
            if self._session is not None:
                closed += self._close(t_ns, self._reason(pack))
            if abs(i) <= self._rest_current():
                self._rest(t_ns, v, pack)
            else:
                self._end_rest(t_ns)
                self._storage = None  # discharged: not storage any more
        self._t_ns, self._v, self._i = t_ns, v, i
        return closed

    def finish(self) -> list[ChargeSession]:
        """The end of the data: the session still charging is returned with reason ``open``."""
        return self._close(self._t_ns or 0, "open") if self._session is not None else []

    def _learn(self, pack: SlotReading) -> None:
        if pack.chemistry:
            self.chemistry = pack.chemistry
        if pack.nominal_capacity_ah:
            self.nominal_ah = pack.nominal_capacity_ah
        if self._cells is None:
            self._cells = cells_in_series(self.chemistry, pack.cell_count, pack.pack_nominal_voltage_v)
        if pack.soh_pct is not None:
            self._soh_bms = pack.soh_pct
        if pack.charge_count is not None:
            self._cycles_bms = pack.charge_count

    def _charge_on(self) -> float:
        return max(self.s.charge_on_min_a, self.s.charge_on_c * (self.nominal_ah or 0.0))

    def _rest_current(self) -> float:
        return max(self.s.rest_min_a, self.s.rest_c * (self.nominal_ah or 0.0))

    # -- coulomb counting and current steps --------------------------------------------------------

    def _count(self, dt: float, v0: float, i0: float, v1: float, i1: float) -> None:
        h = dt / 3600.0
        ah = (i0 + i1) / 2 * h
        wh = (v0 * i0 + v1 * i1) / 2 * h
        self.ah += ah
        if ah >= 0:
            self.ah_in += ah
        else:
            self.ah_out -= ah
        if wh >= 0:
            self.wh_in += wh
        else:
            self.wh_out -= wh
        if self._session is not None and ah > 0:
            self._session.charge_ah += ah
            self._session.energy_in_wh += max(0.0, wh)

    def _step(self, dt: float, v0: float, i0: float, v1: float, i1: float) -> None:
        di = i1 - i0
        if dt > self.s.step_max_dt_s or abs(di) < max(self.s.step_min_a, self.s.step_min_c * (self.nominal_ah or 0)):
            return
        r = (v1 - v0) / di
        if 0 < r < 2.0:  # ohms; anything else is a reading error or a voltage sampled mid-change
            self._steps.append((self._cycle_now(), r, dt))

    def _break(self) -> None:
        """A gap: nothing before it pairs with anything after it."""
        self._anchors.clear()
        self._rest_start_ns = None
        self._storage = None
        self._topup_from = None
        self._t_ns = self._v = self._i = None

    # -- charge sessions ----------------------------------------------------------------------------

    def _open(self, t_ns: int, pack: SlotReading, place: Place) -> None:
        self._session = ChargeSession(self.battery_id, place, t_ns, t_ns, soc_start_pct=pack.soc_pct,
                                      voltage_start_v=pack.voltage_v, temperature_start_c=pack.temperature_c,
                                      cycles=pack.charge_count)
        if self._storage is not None and t_ns - self._storage.start_ns >= self.s.storage_s * 1e9 \
                and self._storage.after_full:
            self._topup_from = self._storage
        self._storage = None

    def _track(self, t_ns: int, pack: SlotReading) -> None:
        s = self._session
        assert s is not None
        s.end_ns = t_ns
        s.soc_end_pct = pack.soc_pct if pack.soc_pct is not None else s.soc_end_pct
        s.voltage_end_v = pack.voltage_v
        s.current_max_a = max(s.current_max_a, pack.charge_current_a or 0.0)
        for temp in (pack.temperature_c, pack.cell_temperature_max_c):
            if temp is not None:
                s.temperature_max_c = temp if s.temperature_max_c is None else max(s.temperature_max_c, temp)
        for temp in (pack.temperature_c, pack.cell_temperature_min_c):
            if temp is not None:
                s.temperature_min_c = temp if s.temperature_min_c is None else min(s.temperature_min_c, temp)

    def _reason(self, pack: SlotReading) -> str:
        if pack.bms_protection or pack.charger_protection:
            return "protection"
        if pack.battery_state == BatteryState.EMPTY:
            return "removed"
        if pack.battery_state == BatteryState.FULL or (pack.soc_pct is not None and pack.soc_pct >= 99.5):
            return "full"
        s = self._session
        if s is not None and self._cells and self.chemistry and s.voltage_end_v is not None:
            try:
                limit = CELLS[Chemistry(self.chemistry)].charge_v * self._cells
            except (KeyError, ValueError):
                limit = None
            taper = self.nominal_ah is not None and self._i is not None and self._i <= 0.1 * self.nominal_ah
            if limit is not None and s.voltage_end_v >= 0.985 * limit and taper:
                return "full"
        return "stopped"

    def _close(self, t_ns: int, reason: str) -> list[ChargeSession]:
        s = self._session
        if s is None:
            return []
        self._session = None
        s.reason = reason
        self.sessions += 1
        if reason == "full":
            estimate = self._full_anchor(s.end_ns)
            if estimate is not None:
                s.capacity_ah, s.capacity_sigma_ah = estimate.capacity_ah, estimate.sigma_ah
            if self._topup_from is not None:
                days = (s.start_ns - self._topup_from.start_ns) / 86400e9
                self._sd_ah += s.charge_ah
                self._sd_days += days
            # Idle from here on is storage at full.
            self._storage = _Rest(s.end_ns, True)
        self._topup_from = None
        return [s]

    # -- anchors and capacity -----------------------------------------------------------------------

    def _full_anchor(self, t_ns: int) -> CapacityEstimate | None:
        self._fulls.append((self.wh_in, self.wh_out))
        return self._anchor(Anchor(t_ns, 100.0, self.s.full_soc_sigma, self.ah, self.ah_in + self.ah_out, "full"))

    def _rest(self, t_ns: int, v: float, pack: SlotReading) -> None:
        if self._rest_start_ns is None:
            self._rest_start_ns = t_ns
            self._rest_anchor_done = False
            if self._storage is None:
                self._storage = _Rest(t_ns, False)
        self._rest_last_v = v
        if t_ns - self._rest_start_ns >= self.s.rest_s * 1e9:
            self._ocv_anchor(t_ns, v)

    def _end_rest(self, t_ns: int) -> None:
        if self._rest_start_ns is not None and t_ns - self._rest_start_ns >= self.s.storage_s * 1e9:
            self._storages.append((self._rest_start_ns, t_ns))
        self._rest_start_ns = None

    def _ocv_anchor(self, t_ns: int, v: float) -> None:
        if not self._cells:
            return
        cell_v = v / self._cells
        soc = soc_from_ocv(self.chemistry, cell_v, self.s.ocv_curve)
        if soc is None:
            return
        slope = ocv_slope(self.chemistry, soc, self.s.ocv_curve) or 0.0
        if slope <= 0:
            return
        sigma_v = math.hypot(self.s.ocv_sigma_v, self.s.voltage_resolution_v / self._cells / math.sqrt(12))
        sigma = sigma_v / slope
        if sigma > self.s.max_anchor_sigma:
            return
        anchor = Anchor(t_ns, soc, sigma, self.ah, self.ah_in + self.ah_out, "ocv")
        # The longer the rest, the more relaxed: a rest keeps one anchor, its latest voltage.
        if self._rest_anchor_done and self._anchors and self._anchors[-1].kind == "ocv":
            self._anchors.pop()
            if self._rest_estimate is not None and self._estimates and self._estimates[-1] is self._rest_estimate:
                self._estimates.pop()
        self._rest_anchor_done = True
        self._rest_estimate = self._anchor(anchor)

    def _anchor(self, new: Anchor) -> CapacityEstimate | None:
        best: CapacityEstimate | None = None
        for old in self._anchors:
            d_soc = new.soc_pct - old.soc_pct
            d_ah = new.ah - old.ah
            if abs(d_soc) < self.s.min_delta_soc or (new.t_ns - old.t_ns) > self.s.max_anchor_span_s * 1e9:
                continue
            if d_ah * d_soc <= 0:
                continue
            capacity = d_ah / d_soc * 100.0
            hours = (new.t_ns - old.t_ns) / 3.6e12
            throughput = new.throughput_ah - old.throughput_ah
            sigma_q = math.hypot(self.s.current_gain * throughput, self.s.current_offset_a * hours)
            rel = math.hypot(sigma_q / abs(d_ah), math.hypot(old.sigma_pct, new.sigma_pct) / abs(d_soc))
            estimate = CapacityEstimate(new.t_ns, capacity, capacity * rel, abs(d_soc), self._cycle_now())
            if best is None or estimate.sigma_ah / estimate.capacity_ah < best.sigma_ah / best.capacity_ah:
                best = estimate
        self._anchors.append(new)
        if best is None or best.sigma_ah > self.s.max_capacity_rel_sigma * best.capacity_ah:
            return None
        self._estimates.append(best)
        return best

    def _cycle_now(self) -> float:
        return float(self._cycles_bms) if self._cycles_bms is not None else self._equivalent_cycles()

    def _equivalent_cycles(self) -> float:
        return (self.ah_in + self.ah_out) / (2 * self.nominal_ah) if self.nominal_ah else 0.0

    # -- the estimate -------------------------------------------------------------------------------

    def estimate(self) -> BatteryEstimate:
        capacity, sigma = self._capacity()
        nominal = self.nominal_ah
        soh = soh_sigma = None
        if capacity is not None and sigma is not None and nominal:
            soh, soh_sigma = capacity / nominal * 100.0, sigma / nominal * 100.0
        r = r_sigma = r_dt = None
        newest = self._steps[-1][0] if self._steps else 0.0
        recent = [x for x in self._steps if x[0] >= newest - self.s.resistance_window_cycles]
        if recent:
            steps = [x[1] for x in recent]
            r = statistics.median(steps) * 1000.0
            spread = (statistics.median(abs(x - r / 1000.0) for x in steps) * 1.4826 * 1000.0
                      if len(steps) > 2 else r)
            floor = self.s.voltage_resolution_v / math.sqrt(12) / max(self.s.step_min_a, 1e-9) * 1000.0
            r_sigma = 1.2533 * max(spread, floor) / math.sqrt(len(steps))
            r_dt = statistics.median(x[2] for x in recent)
        efficiency = None
        if len(self._fulls) >= 2:
            (in0, out0), (in1, out1) = self._fulls[0], self._fulls[-1]
            if nominal and in1 - in0 > 0 and out1 - out0 > 0.5 * nominal:
                efficiency = (out1 - out0) / (in1 - in0) * 100.0
        sd = None
        if self._sd_days > 0 and (capacity or nominal):
            sd = self._sd_ah / (capacity or nominal or 1.0) * 100.0 / self._sd_days
        return BatteryEstimate(
            battery_id=self.battery_id, place=self._place, chemistry=self.chemistry, nominal_capacity_ah=nominal,
            capacity_ah=capacity, capacity_sigma_ah=sigma, capacity_estimates=len(self._estimates),
            soh_pct=soh, soh_sigma_pct=soh_sigma, soh_bms_pct=self._soh_bms,
            resistance_mohm=r, resistance_sigma_mohm=r_sigma, resistance_steps=len(recent),
            resistance_dt_s=r_dt, cycles=float(self._cycles_bms) if self._cycles_bms is not None else None,
            equivalent_cycles=self._equivalent_cycles(), fade_pct_per_100_cycles=self._fade(),
            self_discharge_pct_per_day=sd, recovery_pct=self._recovery(), energy_in_wh=self.wh_in,
            energy_out_wh=self.wh_out, efficiency_pct=efficiency, charge_sessions=self.sessions,
            last_seen_ns=self._t_ns or 0, history=tuple(self._estimates))

    def _capacity(self) -> tuple[float | None, float | None]:
        if not self._estimates:
            return None, None
        # The latest estimates, within capacity_window_cycles of the newest (older ones lag the fade).
        newest = self._estimates[-1].cycles
        recent = [e for e in self._estimates[-self.s.capacity_window:]
                  if e.cycles >= newest - self.s.capacity_window_cycles]
        weights = [1 / e.sigma_ah ** 2 for e in recent]
        mean = sum(w * e.capacity_ah for w, e in zip(weights, recent)) / sum(weights)
        # The gain error is systematic: averaging does not take it away.
        sigma = math.hypot(1 / math.sqrt(sum(weights)), self.s.current_gain * mean)
        return mean, sigma

    def _fade(self) -> float | None:
        """SOH lost per 100 cycles: weighted least squares of capacity over cycles (≥ 3 estimates, ≥ 20 cycles)."""
        return fade_per_100_cycles(self._estimates, self.nominal_ah)

    def _recovery(self) -> float | None:
        """Capacity after the latest storage (idle ≥ storage_s) over capacity before it (%)."""
        for start, end in reversed(self._storages):
            before = [e for e in self._estimates if e.t_ns <= start]
            after = [e for e in self._estimates if e.t_ns >= end]
            if before and after:
                return after[0].capacity_ah / before[-1].capacity_ah * 100.0
        return None

    def seed(self, history: Iterator[CapacityEstimate] | list[CapacityEstimate]) -> None:
        """Earlier capacity estimates (from stored ``charge_session`` points), so trends span runs."""
        self._estimates[:0] = sorted(history, key=lambda e: e.t_ns)


def fade_per_100_cycles(estimates: list[CapacityEstimate] | tuple[CapacityEstimate, ...],
                        nominal_ah: float | None) -> float | None:
    """Percentage points of SOH lost per 100 cycles (positive = fading), weighted least squares;
    ``None`` with fewer than 3 estimates or less than 20 cycles between them."""
    if not nominal_ah or len(estimates) < 3:
        return None
    xs = [e.cycles for e in estimates]
    if max(xs) - min(xs) < 20:
        return None
    ws = [1 / (e.sigma_ah / nominal_ah * 100) ** 2 for e in estimates]
    ys = [e.capacity_ah / nominal_ah * 100 for e in estimates]
    sw = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs)) / sw
    my = sum(w * y for w, y in zip(ws, ys)) / sw
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
    if sxx <= 0:
        return None
    slope = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / sxx
    return -slope * 100.0

