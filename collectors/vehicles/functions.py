"""Per-vehicle settings of the vehicle functions (config ``vehicles.functions``, docs/vehicles.md).

What the user sets in the app for each vehicle, or the operator for the fleet: the geofence (V-5.2: a
radius R around a home point, or around where the vehicle was armed), the low-battery reminder SOC
(V-5.6), and the report intervals the vehicles must keep (V-5.7, V-5.8). Validated at start-up, resolved
once into one :class:`core.model.VehicleProfile` per vehicle (the watch attaches it to each report; the
vehicle-scope rules read it through the report's derived values).

    functions = VehicleFunctions(defaults={"low_soc_pct": 20, "fence_radius_m": 300},
                                 vehicles={"V000001": {"home": {"lat": 39.92, "lon": 116.54}}})
    profiles = functions.profiles(registry)      # raises CascadeError for a vehicle not provisioned
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import model_validator

from core.errors import CascadeError
from core.model import VehicleProfile
from core.validation import Field, Float, Model, shown_default

__all__ = ["CALIBRATE_AFTER_S", "HomePoint", "VehicleFunctionSettings", "VehicleFunctions"]

CALIBRATE_AFTER_S = 30.0
"""A report whose time is further than this from the platform's gets a time-calibration reply (V-4.6)."""


class HomePoint(Model):
    """The fence centre (WGS-84 degrees)."""

    lat: Float = Field(ge=-90, le=90, description="latitude in degrees, -90..90")
    lon: Float = Field(ge=-180, le=180, description="longitude in degrees, -180..180")


class VehicleFunctionSettings(Model):
    """One vehicle's settings (or the fleet defaults); a key left out takes the default's."""

    low_soc_pct: Float | None = Field(default=None, ge=0, le=100,
                                      description="remind the user below this SOC (V-5.6), 0-100; null: no reminder")
    fence_radius_m: Float | None = Field(default=None, gt=0, le=1_000_000,
                                         description="geofence radius R in metres (V-5.2: alarm beyond R x 1.2); "
                                                     "null: no fence")
    home: HomePoint | None = Field(default=None,
                                   description="the fence centre {lat, lon}; leave out to centre the fence where "
                                               "the vehicle was armed")


class VehicleFunctions(Model):
    """Settings of the vehicle functions: fleet defaults, per-vehicle settings and the report rates."""

    defaults: VehicleFunctionSettings = Field(
        default=VehicleFunctionSettings(), json_schema_extra=shown_default("no reminder, no fence"),
        description="settings of every vehicle not listed in vehicles, e.g. {low_soc_pct: 20, fence_radius_m: 300}")
    vehicles: dict[str, VehicleFunctionSettings] = Field(
        default={}, description="per vehicle id: what the user set in the app (missing keys: the defaults), e.g. "
                                "{V000001: {home: {lat: 39.92, lon: 116.54}, fence_radius_m: 150}}")
    report_on_s: Float = Field(default=60.0, gt=0, description="report interval while powered on (V-5.7: 60 s)")
    report_off_s: Float = Field(default=3600.0, gt=0, description="report interval while off (V-5.8: 3600 s)")
    silence_check_s: Float = Field(default=30.0, gt=0,
                                   description="how often the watch looks for vehicles that fell silent")
    calibrate_after_s: Float = Field(default=CALIBRATE_AFTER_S, gt=0,
                                     description="clock skew (s) beyond which a report gets a time-calibration reply")

    @model_validator(mode="after")
    def _home_needs_radius(self) -> VehicleFunctions:
        for name, entry in [("defaults", self.defaults), *((f"vehicles.{k}", v) for k, v in self.vehicles.items())]:
            radius = entry.fence_radius_m if entry.fence_radius_m is not None else self.defaults.fence_radius_m
            if entry.home is not None and radius is None:
                raise ValueError(f"{name}.home is set but no fence_radius_m applies to it. "
                                 "Fix: give fence_radius_m (here or in defaults), or remove home")
        return self

    def profile(self, vehicle: str) -> VehicleProfile:
        """The resolved settings of one vehicle (its own keys over the defaults)."""
        own, base = self.vehicles.get(vehicle), self.defaults
        entry = base if own is None else VehicleFunctionSettings(
            low_soc_pct=own.low_soc_pct if own.low_soc_pct is not None else base.low_soc_pct,
            fence_radius_m=own.fence_radius_m if own.fence_radius_m is not None else base.fence_radius_m,
            home=own.home if own.home is not None else base.home)
        return VehicleProfile(low_soc_pct=entry.low_soc_pct, fence_radius_m=entry.fence_radius_m,
                              home_latitude_deg=entry.home.lat if entry.home else None,
                              home_longitude_deg=entry.home.lon if entry.home else None,
                              report_on_s=self.report_on_s, report_off_s=self.report_off_s)

    def check_vehicles(self, known: Iterable[str], source: str = "vehicles.functions") -> None:
        """Every listed vehicle must be a provisioned device: a typo would silently leave a vehicle
        without its fence. Raises :class:`CascadeError` naming the first unknown id."""
        ids = set(known)
        for vehicle in self.vehicles:
            if vehicle not in ids:
                raise CascadeError(f"vehicle {vehicle!r} is not a provisioned device", source=source,
                                   key=f"vehicles.{vehicle}",
                                   fix="use a device id from devices.json (cascade devices provision), or remove it")
