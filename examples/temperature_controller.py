#!/usr/bin/env python3
"""An IoT Plug and Play device that uses Azure IoT Hub only through iothub-sidecar, with nothing
but Python's standard library: the temperature controller of Microsoft's Plug and Play samples
(model `dtmi:com:example:TemperatureController;2`), made of

* the root component: the `workingSet` telemetry, the `serialNumber` property and the `reboot`
  command;
* two thermostats, the components `thermostat1` and `thermostat2`
  (`dtmi:com:example:Thermostat;1`): `temperature` telemetry, the writable property
  `targetTemperature` (acknowledged with `ac`, `av`, `ad` and `value`), the property
  `maxTempSinceLastReboot` and the command `getMaxMinReport`;
* `deviceInformation` (`dtmi:azure:DeviceManagement:DeviceInformation;1`): read-only properties.

The model id is announced by the sidecar when it connects, so start the sidecar with it:

    iothub-sidecar serve --local-hub --model-id 'dtmi:com:example:TemperatureController;2'
    SIDECAR_URL=http://127.0.0.1:8080 python3 examples/temperature_controller.py

The Plug and Play conventions, as this program uses the sidecar's REST API for them:

* component telemetry: `POST /messages` with `iothub-componentname: thermostat1` (the `$.sub`
  property of IoT Hub's MQTT messages);
* component properties: `PATCH /twin` with `{"thermostat1": {"__t": "c", ...}}`;
* writable properties: `GET /twin/desired` long-polls; each value is acknowledged with a
  reported `{"value": ..., "ac": 200, "av": <desired $version>, "ad": "..."}`;
* component commands: `GET /methods` long-polls; a command of a component is the direct method
  `<component>*<command>`, e.g. `thermostat1*getMaxMinReport`.

TELEMETRY_INTERVAL (seconds, 5 by default) sets how often telemetry is sent; SIDECAR_TOKEN the
sidecar's API token, if it has one. SIGTERM or Ctrl-C stops it.
"""
import datetime
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse

SIDECAR = urllib.parse.urlsplit(os.environ.get("SIDECAR_URL", "http://127.0.0.1:8080"))
TOKEN = os.environ.get("SIDECAR_TOKEN")
MODEL_ID = "dtmi:com:example:TemperatureController;2"
THERMOSTATS = ("thermostat1", "thermostat2")


def call(method, path, body=None, headers=None, timeout=70):
    """One request to the sidecar; returns (status, parsed JSON or None)."""
    connection = http.client.HTTPConnection(SIDECAR.hostname, SIDECAR.port or 80, timeout=timeout)
    all_headers = dict(headers or {})
    if TOKEN:
        all_headers["Authorization"] = "Bearer " + TOKEN
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        parsed = json.loads(data) if data and "json" in response.getheader("Content-Type", "") else None
        return response.status, parsed
    finally:
        connection.close()


def wait_for_sidecar(limit=120):
    deadline = time.monotonic() + limit
    while True:
        try:
            if call("GET", "/healthz", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("temperature_controller: the sidecar at {} did not answer; is it running?".format(SIDECAR.geturl()))
        time.sleep(0.5)


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Thermostat:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.temperature = 21.0
            self.target = None
            self.readings = []
            self.since = now()

    def step(self):
        """The next reading: towards the target when there is one, else a little noise."""
        with self.lock:
            if self.target is not None:
                self.temperature += (self.target - self.temperature) / 2
            else:
                self.temperature += random.uniform(-0.5, 0.5)
            self.temperature = round(self.temperature, 2)
            self.readings = (self.readings + [self.temperature])[-100:]
            return self.temperature

    def report(self):
        with self.lock:
            readings = self.readings or [self.temperature]
            return {"maxTemp": max(readings), "minTemp": min(readings),
                    "avgTemp": round(sum(readings) / len(readings), 2), "startTime": self.since, "endTime": now()}


class TemperatureController:
    def __init__(self):
        self.thermostats = {name: Thermostat(name) for name in THERMOSTATS}
        self.stopping = threading.Event()

    # -- properties

    def report_properties(self):
        """The read-only properties, one component each; `__t: "c"` marks a component."""
        patch = {
            "serialNumber": "SN-" + str(os.getpid()),
            "deviceInformation": {
                "__t": "c", "manufacturer": "Contoso Device Corporation", "model": "Contoso 4762B-turbo",
                "swVersion": "5.5", "osName": sys.platform, "processorArchitecture": os.uname().machine,
                "processorManufacturer": "unknown", "totalStorage": 1024, "totalMemory": 32,
            },
        }
        for name in THERMOSTATS:
            patch[name] = {"__t": "c", "maxTempSinceLastReboot": self.thermostats[name].report()["maxTemp"]}
        status, answer = call("PATCH", "/twin", patch)
        if status != 200:
            print("reporting the properties failed:", status, answer, file=sys.stderr, flush=True)

    def follow_writable_properties(self):
        """Applies `targetTemperature` of each thermostat and acknowledges it (PnP convention)."""
        version = 0
        while not self.stopping.is_set():
            try:
                status, update = call("GET", "/twin/desired?since={}&timeout=20".format(version))
            except OSError:
                time.sleep(1)
                continue
            if status == 204:
                continue
            if status != 200:
                time.sleep(1)
                continue
            version = update["version"]
            # The patches when the sidecar has them all, else the whole document (first poll).
            for patch in update.get("patches") or [update["desired"]]:
                self.acknowledge(patch, patch.get("$version", version))

    def acknowledge(self, patch, desired_version):
        reported = {}
        for name in THERMOSTATS:
            component = patch.get(name)
            if not isinstance(component, dict) or "targetTemperature" not in component:
                continue
            value = component["targetTemperature"]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                with self.thermostats[name].lock:
                    self.thermostats[name].target = float(value)
                ack = {"value": value, "ac": 200, "av": desired_version, "ad": "Successfully executed patch"}
            else:
                ack = {"value": value, "ac": 400, "av": desired_version, "ad": "targetTemperature must be a number"}
            reported[name] = {"__t": "c", "targetTemperature": ack}
        if reported:
            status, answer = call("PATCH", "/twin", reported)
            print("acknowledged", json.dumps(reported), "->", status, flush=True)
            if status != 200:
                print("the acknowledgement failed:", answer, file=sys.stderr, flush=True)

    # -- commands

    def answer_commands(self):
        while not self.stopping.is_set():
            try:
                status, request = call("GET", "/methods?timeout=20")
            except OSError:
                time.sleep(1)
                continue
            if status != 200:
                if status != 204:
                    time.sleep(1)
                continue
            status, payload = self.run_command(request["methodName"], request.get("payload"))
            call("POST", "/methods/{}/response".format(urllib.parse.quote(request["requestId"], safe="")),
                 {"status": status, "payload": payload})
            print("answered", request["methodName"], status, flush=True)

    def run_command(self, method_name, payload):
        # A component's command arrives as "<component>*<command>"; the root's without a "*".
        component, _, command = method_name.rpartition("*")
        if component == "" and command == "reboot":
            for thermostat in self.thermostats.values():
                thermostat.reset()
            return 200, {"rebootedAfter": payload}
        if component in self.thermostats and command == "getMaxMinReport":
            return 200, self.thermostats[component].report()
        return 404, {"error": "no command {}".format(method_name)}

    # -- telemetry

    def send(self, body, component=None):
        headers = {"Content-Type": "application/json", "iothub-contentencoding": "utf-8"}
        if component:
            headers["iothub-componentname"] = component
        try:
            status, answer = call("POST", "/messages", json.dumps(body).encode(), headers)
        except OSError as error:
            print("the sidecar did not answer:", error, file=sys.stderr, flush=True)
            return
        if status != 200:
            print("sending failed:", status, answer, file=sys.stderr, flush=True)

    def send_telemetry(self, interval):
        while not self.stopping.is_set():
            for name in THERMOSTATS:
                self.send({"temperature": self.thermostats[name].step()}, component=name)
            self.send({"workingSet": random.randint(1000, 9000)})
            self.stopping.wait(interval)


def main():
    wait_for_sidecar()
    controller = TemperatureController()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: controller.stopping.set())
    status, sidecar = call("GET", "/status")
    if status == 200 and sidecar.get("modelId") != MODEL_ID:
        print("note: the sidecar announces the model id {!r}, not {}; start it with --model-id '{}'".format(
            sidecar.get("modelId"), MODEL_ID, MODEL_ID), file=sys.stderr, flush=True)
    controller.report_properties()
    for worker in (controller.follow_writable_properties, controller.answer_commands):
        threading.Thread(target=worker, daemon=True).start()
    controller.send_telemetry(float(os.environ.get("TELEMETRY_INTERVAL", "5")))
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
