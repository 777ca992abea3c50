"""Serve a simulated fleet over real Modbus TCP, plus a small HTTP control endpoint.

One pymodbus :class:`~pymodbus.server.ModbusTcpServer` per port; each port serves ``per_port``
cabinets as device ids 1..n. The datastore is :class:`FleetContext`, which computes every
response from the cabinet's state at request time (through its profile's register bank).

pymodbus 3.16 is midway between its old datastore (``ModbusDeviceContext``) and the new
``SimDevice``; neither can compute values on demand. The server base class accepts a
:class:`~pymodbus.datastore.ModbusServerContext` with ``old_simulator`` set and then calls its
``async_getValues`` / ``async_setValues`` directly, so :class:`FleetContext` subclasses it
without calling its ``__init__`` (which would demand device objects and log deprecations).

Pipelined requests: pymodbus 3.16's server parses one request per receive and empties its receive
buffer whenever it sends an answer, so a client with several requests in flight (Modbus TCP allows it;
the collector's ``max_in_flight``) gets an answer to the first and waits for its timeout on the rest.
:class:`_PipelinedServer` hands every complete request of a receive to pymodbus's own decoding and
datastore, in order, answers each, and keeps an incomplete request's bytes across its answers until
the rest arrives. One request at a time behaves as before. (Not kept: pymodbus's broadcast to unit 0,
which the simulators never enable.)

Outages (scenario ``unreachable``): in ``refuse`` mode the port's listener is closed (clients
get "connection refused", open connections drop) when every cabinet on the port is out; in
``silent`` mode, or on a shared port, requests for the cabinet go unanswered (clients time out).

Control endpoint (aiohttp)::

    POST   /scenarios          body: scenario YAML (?speed=F)  → 201 {"id": "s1", ...} | 400 {"error"}
    GET    /scenarios          → 200 {"scenarios": [...]}
    DELETE /scenarios/{id}     → 200 {"deleted": id} | 404
    GET    /health             → 200 {"status": "ok", "cabinets": n, "ports": n, "scenarios": n}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.transaction import TransactionManager

from .fleet import Fleet, SimulatedCabinet
from .register_bank import FUNCTION_REGISTER_TYPES
from .scenarios import ScenarioError, parse_scenario

__all__ = ["FleetContext", "SimulatorServer", "make_control_app"]

log = logging.getLogger(__name__)


class FleetContext(ModbusServerContext):
    """The pymodbus datastore of one port: the cabinets it serves, by device id."""

    def __init__(self, fleet: Fleet, cabinets: list[SimulatedCabinet]) -> None:  # noqa: D107
        # Deliberately no super().__init__(): see the module docstring.
        self.old_simulator = True
        self.simdevices = []
        self._fleet = fleet
        self._devices = {c.device_id: c for c in cabinets}

    def device_ids(self) -> list[int]:
        return list(self._devices)

    def _cabinet(self, device_id: int) -> SimulatedCabinet | ExcCodes:
        cabinet = self._devices.get(device_id)
        if cabinet is None:
            return ExcCodes.GATEWAY_PATH_UNAVIABLE  # (sic: pymodbus's spelling)
        if self._fleet.is_unreachable(cabinet):
            # The server runs with ignore_missing_devices, so this request is never answered.
            raise NoSuchIdException(f"{cabinet.cabinet_id} is unreachable (scenario)")
        return cabinet

    async def async_getValues(self, device_id: int, func_code: int, address: int,  # noqa: N802
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        cabinet = self._cabinet(device_id)
        if isinstance(cabinet, ExcCodes):
            return cabinet
        register_type = FUNCTION_REGISTER_TYPES.get(func_code)
        if register_type is None:
            return ExcCodes.ILLEGAL_FUNCTION
        values = self._fleet.read(cabinet, register_type, address, count)
        return ExcCodes.ILLEGAL_ADDRESS if values is None else values

    async def async_setValues(self, device_id: int, func_code: int, address: int,  # noqa: N802
                              values: list[int] | list[bool]) -> ExcCodes | None:
        cabinet = self._cabinet(device_id)
        if isinstance(cabinet, ExcCodes):
            return cabinet
        register_type = FUNCTION_REGISTER_TYPES.get(func_code)
        if register_type not in ("coil", "holding"):
            return ExcCodes.ILLEGAL_FUNCTION
        error = self._fleet.write(cabinet, register_type, address, list(values))
        if error is not None:
            return ExcCodes[error]
        log.info("%s: write %s %d = %s", cabinet.cabinet_id, register_type, address, list(values))
        return None


class _PipelinedHandler(ServerRequestHandler):
    """pymodbus's connection handler, answering every request of a receive (module docstring)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._answering: set[asyncio.Task[None]] = set()

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        used = 0
        while used < len(data):
            try:  # pymodbus's framing and decoding of one request (its handler's parent)
                size = TransactionManager.callback_data(self, data[used:], addr)
            except ModbusIOException as exc:  # as pymodbus's handler: the rest of this receive is dropped
                self.server_send(ExceptionResponse(0 if exc.fcode is None else exc.fcode,
                                                   exception_code=ExcCodes.ILLEGAL_FUNCTION,
                                                   device_id=exc.dev_id, transaction=exc.transaction_id), addr)
                return len(data)
            if not size:
                break  # the rest is an incomplete request: kept until more bytes come
            used += size
            if self.last_pdu is not None:
                # One task per request, created in order: the datastore never waits, so each answers
                # before the next starts and the answers go out in the order asked.
                task = self.loop.create_task(self._answer(self.last_pdu, addr))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
        return used

    def send(self, data: bytes, addr: tuple | None = None) -> None:
        # pymodbus empties the receive buffer on every send: an incomplete request still arriving
        # would lose its first bytes, and the connection would answer nothing more.
        kept = self.recv_buffer
        super().send(data, addr)
        self.recv_buffer = kept

    async def _answer(self, pdu: Any, addr: tuple | None) -> None:
        """pymodbus's ``handle_request`` for one given request (it reads the handler's last one)."""
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except NoSuchIdException:
            if self.server.ignore_missing_devices:
                return  # unanswered: the client times out (scenario "unreachable", silent mode)
            response = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:  # noqa: BLE001 - as pymodbus: the device answers "failure", the server goes on
            log.exception("simulator: request %s failed", pdu)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)


class _PipelinedServer(ModbusTcpServer):
    def callback_new_connection(self) -> _PipelinedHandler:
        return _PipelinedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class SimulatorServer:
    """Every port of a fleet, the scenario timer and (optionally) the control endpoint."""

    def __init__(self, fleet: Fleet, *, control_host: str = "127.0.0.1", control_port: int = 0,
                 timer_s: float = 0.2, state_path: str | Path | None = None) -> None:
        self.fleet = fleet
        # Running scenarios survive a restart of the simulator (`make run` again): a fault nobody fixed is
        # still there, so the collector does not page "resolved" for it. Kept as posted, with start time.
        self.state_path = Path(state_path) if state_path else None
        self._saved: dict[str, dict[str, Any]] = {}
        self.control_host = control_host
        self.control_port = control_port
        self.timer_s = timer_s  # how often due scenario steps (outages) are checked
        self._ports = fleet.ports()
        self._contexts = {port: FleetContext(fleet, cabs) for port, cabs in self._ports.items()}
        self._servers: dict[int, ModbusTcpServer | None] = {port: None for port in self._ports}
        self._timer: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()

    @property
    def control_url(self) -> str | None:
        return f"http://{self.control_host}:{self.control_port}" if self._runner else None

    def is_listening(self, port: int) -> bool:
        return self._servers.get(port) is not None

    async def start(self) -> None:
        """Open every port (and the control endpoint); raise RuntimeError naming a busy port."""
        try:
            self.resume()
            await self.reconcile()
            if self.control_port:
                self._runner = web.AppRunner(make_control_app(self), access_log=None)
                await self._runner.setup()
                try:
                    await web.TCPSite(self._runner, self.control_host, self.control_port).start()
                except OSError as err:
                    raise RuntimeError(f"control endpoint {self.control_host}:{self.control_port}: "
                                       f"{err.strerror}. Fix: pick another --control-port (0 = off)") from err
        except BaseException:
            await self.stop()
            raise
        self._timer = asyncio.create_task(self._run_timer(), name="simulator scenario timer")

    def remember(self, run_id: str, text: str, source: str, speed: float, started_s: float) -> None:
        """Keep a posted scenario (its YAML, speed and start time) for :meth:`resume` after a restart."""
        self._saved[run_id] = {"yaml": text, "source": source, "speed": speed, "started_s": started_s}
        self._save()

    def forget(self, run_id: str) -> None:
        if self._saved.pop(run_id, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.state_path is None:
            return
        entries = [entry for run_id, entry in self._saved.items() if run_id in self.fleet.runs]
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"scenarios": entries}, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as err:
            log.warning("%s: running scenarios not saved (%s); a restart will not resume them",
                        self.state_path, err.strerror)

    def resume(self) -> list[str]:
        """Start again every scenario that was running when the simulator last stopped, from its original
        start time: steps already due are played at once, the rest when due. Returns the run ids."""
        if self.state_path is None or not self.state_path.exists():
            return []
        try:
            entries = json.loads(self.state_path.read_text(encoding="utf-8"))["scenarios"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s: cannot resume scenarios (%s); starting without them", self.state_path, err)
            return []
        resumed = []
        now = self.fleet.clock()
        for entry in entries:
            try:
                scenario = parse_scenario(entry["yaml"], entry.get("source", str(self.state_path)))
                started, speed = float(entry["started_s"]), float(entry["speed"])
                run = self.fleet.start_scenario(scenario, speed=speed, now=min(started, now))
            except (ScenarioError, KeyError, TypeError, ValueError) as err:
                log.warning("%s: a saved scenario cannot be resumed: %s", self.state_path, err)
                continue
            self._saved[run.id] = {**entry, "started_s": run.started_s}
            resumed.append(run.id)
            log.info("scenario %s resumed: %s on %s slot %s, started %.0f s ago (speed %g)", run.id, scenario.name,
                     scenario.cabinet, scenario.slot, now - run.started_s, speed)
        self._save()
        return resumed

    async def stop(self) -> None:
        """Close everything; safe to call twice."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for port, server in self._servers.items():
            if server is not None:
                await server.shutdown()
                self._servers[port] = None

    async def reconcile(self) -> None:
        """Play due scenario steps, then open or close listeners to match outages."""
        async with self._lock:
            now = self.fleet.sync_due()
            for port, cabinets in self._ports.items():
                refused = all(c.state.unreachable_until > now and c.state.unreachable_mode == "refuse"
                              for c in cabinets)
                server = self._servers[port]
                if refused and server is not None:
                    log.info("port %d: listener closed (scenario outage)", port)
                    await server.shutdown()
                    self._servers[port] = None
                elif not refused and server is None:
                    await self._open(port)

    async def _open(self, port: int) -> None:
        host = self._ports[port][0].host
        server = _PipelinedServer(self._contexts[port], address=(host, port), ignore_missing_devices=True)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise RuntimeError(f"cannot listen on {host}:{port} (in use?). Fix: pick another --port base "
                               f"or stop what holds it") from err
        self._servers[port] = server

    async def _run_timer(self) -> None:
        while True:
            await asyncio.sleep(self.timer_s)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - one bad tick must not stop the outages ending
                log.exception("scenario timer failed")


def make_control_app(server: SimulatorServer) -> web.Application:
    """The control endpoint's aiohttp application."""
    fleet = server.fleet

    async def post_scenario(request: web.Request) -> web.Response:
        source = request.headers.get("X-Scenario-File", "POST /scenarios")
        try:
            speed = float(request.query.get("speed", fleet.speed))
            if speed <= 0:
                raise ValueError
        except ValueError:
            return web.json_response({"error": f"speed={request.query.get('speed')!r}: use a number > 0"},
                                     status=400)
        text = await request.text()
        try:
            scenario = parse_scenario(text, source)
            run = fleet.start_scenario(scenario, speed=speed)
        except ScenarioError as err:
            return web.json_response({"error": str(err), "key": err.key}, status=400)
        server.remember(run.id, text, source, speed, run.started_s)
        await server.reconcile()
        log.info("scenario %s started: %s on %s slot %s (speed %g)", run.id, scenario.name, scenario.cabinet,
                 scenario.slot, speed)
        return web.json_response(run.describe(fleet.clock()), status=201)

    async def list_scenarios(_request: web.Request) -> web.Response:
        now = fleet.clock()
        return web.json_response({"scenarios": [r.describe(now) for r in fleet.runs.values()]})

    async def delete_scenario(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if not fleet.stop_scenario(run_id):
            return web.json_response({"error": f"no scenario {run_id}", "known": sorted(fleet.runs)}, status=404)
        server.forget(run_id)
        await server.reconcile()
        return web.json_response({"deleted": run_id})

    async def health(_request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "ok", "cabinets": len(fleet.cabinets),
                                "ports": len(server._ports), "scenarios": len(fleet.runs)}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/scenarios", post_scenario)
    app.router.add_get("/scenarios", list_scenarios)
    app.router.add_delete("/scenarios/{run_id}", delete_scenario)
    app.router.add_get("/health", health)
    return app
