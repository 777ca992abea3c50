"""Settings of the vehicle ingest workers (config section ``vehicles``, docs/configuration.md)."""

from __future__ import annotations

from typing import Annotated

from annotated_types import MinLen

from core.validation import Bool, Field, Float, Int, Model, shown_default

from .functions import VehicleFunctions

__all__ = ["HttpsSettings", "MqttSettings", "VehicleSettings"]

Text = Annotated[str, MinLen(1)]


class MqttSettings(Model):
    """The broker the vehicles publish to; every worker subscribes to the shared subscription."""

    host: Text = Field(default="127.0.0.1", description="the MQTT broker's address")
    port: Int = Field(default=1883, ge=1, le=65535, description="the broker's port (8883 with TLS)")
    username: str = Field(default="ingest", description="the ingest workers' broker user")
    password: str = Field(default="", description="its password, usually ${CASCADE_MQTT_PASSWORD}")
    tls_ca: str = Field(default="", description="a CA file: connect with TLS and verify the broker against it")
    group: Text = Field(default="cascade-ingest",
                        description="the shared-subscription group: workers in one group share the stream")
    keepalive_s: Int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive in seconds")


class HttpsSettings(Model):
    """The HTTPS listener for devices that post batches and poll for commands."""

    host: Text = Field(default="127.0.0.1", description="the address to listen on (0.0.0.0 in a container)")
    port: Int = Field(default=8443, ge=0, le=65535, description="the port; a worker adds its index - 1")
    cert: str = Field(default="", description="the server certificate (PEM); empty: plain HTTP (tests only)")
    key: str = Field(default="", description="the certificate's private key (PEM)")
    max_body_bytes: Int = Field(default=1 << 20, ge=1024, description="the largest batch body accepted")
    max_batch: Int = Field(default=1000, ge=1, description="the most reports in one batch")


class VehicleSettings(Model):
    """Vehicle ingest over MQTT and HTTPS (``cascade ingest``; docs/vehicles.md)."""

    devices: Text = Field(description="devices.json: the provisioned devices (cascade devices provision)")
    mqtt: MqttSettings | None = Field(default=None, description="MQTT ingest; leave out for HTTPS only")
    https: HttpsSettings | None = Field(default=None, description="HTTPS ingest; leave out for MQTT only")
    metrics_port: Int = Field(default=9118, ge=0, le=65535,
                              description="Prometheus /metrics of worker 1; worker N listens on port + N - 1")
    rate_per_s: Float = Field(default=0.5, gt=0, description="reports per second a device may keep sending")
    burst: Float = Field(default=30, ge=1, description="reports a device may send at once before the rate applies")
    replay_window_s: Float = Field(default=300, gt=0, description="± seconds a report's time may be from ours")
    watch: Bool = Field(default=True,
                        description="true: `cascade run` evaluates the battery rules on every report of the "
                                    "fleets in watch_fleets (its own MQTT subscription); false: vehicles are stored only")
    functions: VehicleFunctions = Field(
        default=VehicleFunctions(), json_schema_extra=shown_default("see vehicles.functions"),
        description="the vehicle functions: fence, low-battery reminder per vehicle, report rates (docs/vehicles.md)")
    watch_fleets: list[Text] = Field(default=["+"],
                                     description="the fleets this `cascade run` watches, e.g. [bj, sh]; [\"+\"] = all")
