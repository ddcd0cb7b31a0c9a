"""The examples against a live sidecar and its local hub. examples/device_app.py: its telemetry
arrives, it follows a desired property and reports it, and it answers methods (and stops on
`stop`). examples/temperature_controller.py: an IoT Plug and Play device whose model id,
component telemetry, acknowledged writable property and commands are checked at the hub."""
import json
import os
import signal
import subprocess
import sys
import time

from sidecar_support import Sidecar, free_port

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "device_app.py")
TEMPERATURE_CONTROLLER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "temperature_controller.py")
CONTROLLER_MODEL = "dtmi:com:example:TemperatureController;2"


def test_device_app_example():
    sidecar = Sidecar().wait_ready()
    app = subprocess.Popen([sys.executable, EXAMPLE], env=dict(os.environ, SIDECAR_URL="http://" + sidecar.listen),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = sidecar.telemetry(after=0, timeout=10)["messages"]
        assert first and first[0]["properties"] == {"source": "device_app"}

        sidecar.set_desired({"telemetryInterval": 1})
        deadline = time.time() + 20
        reported = None
        while time.time() < deadline:
            reported = sidecar.hub("GET", "/twins/sidecar-device?api-version=2021-04-12").json()["properties"]["reported"]
            if reported.get("telemetryInterval") == 1:
                break
            time.sleep(0.2)
        assert reported.get("telemetryInterval") == 1
        cursor = sidecar.telemetry_cursor()
        assert len(sidecar.telemetry(after=cursor, timeout=5)["messages"]) >= 1

        status = sidecar.invoke_method("getStatus")
        status.join(30)
        assert status.reply.status == 200 and status.reply.json()["payload"]["interval"] == 1
        stop = sidecar.invoke_method("stop")
        stop.join(30)
        assert stop.reply.json() == {"status": 200, "payload": {"stopping": True}}
        assert app.wait(20) == 0
        assert "stopped after" in app.stdout.read()
    finally:
        if app.poll() is None:
            app.kill()
        sidecar.stop()


def test_device_app_started_before_the_sidecar_waits_for_it():
    """In a pod or a compose project the app may start first: it waits and says so, then works."""
    port = free_port()
    app = subprocess.Popen([sys.executable, EXAMPLE], env=dict(os.environ, SIDECAR_URL="http://127.0.0.1:{}".format(port)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sidecar = None
    try:
        first_line = app.stdout.readline()
        assert "waiting for the sidecar at http://127.0.0.1:{}".format(port) in first_line, first_line
        assert app.poll() is None
        sidecar = Sidecar(listen="127.0.0.1:{}".format(port)).wait_ready()
        messages = sidecar.telemetry(after=0, timeout=20)["messages"]
        assert messages and messages[0]["properties"] == {"source": "device_app"}
        stop = sidecar.invoke_method("stop")
        stop.join(30)
        assert app.wait(20) == 0
        output = app.stdout.read()
        assert "Traceback" not in output and "stopped after" in output, output
    finally:
        if app.poll() is None:
            app.kill()
        if sidecar:
            sidecar.stop()


def test_device_app_gives_up_with_a_message_when_no_sidecar_comes():
    port = free_port()
    run = subprocess.run([sys.executable, EXAMPLE], env=dict(os.environ, SIDECAR_URL="http://127.0.0.1:{}".format(port), SIDECAR_WAIT="1"),
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    assert "did not answer within 1 s" in run.stderr and "is it running?" in run.stderr, run.stderr


def wait_for(what, check, timeout=20):
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("{} within {} s; last seen: {!r}".format(what, timeout, value))


def test_temperature_controller_example_is_a_plug_and_play_device_at_the_hub():
    """examples/temperature_controller.py (Microsoft's Plug and Play temperature controller,
    through the sidecar): the hub's twin names its model, its telemetry carries component names,
    writable properties are acknowledged, and component and root commands are answered."""
    sidecar = Sidecar(extra_args=["--model-id", CONTROLLER_MODEL]).wait_ready()
    cursor = sidecar.telemetry_cursor()
    app = subprocess.Popen([sys.executable, TEMPERATURE_CONTROLLER],
                           env=dict(os.environ, SIDECAR_URL="http://" + sidecar.listen, TELEMETRY_INTERVAL="0.3"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    twin_path = "/twins/{}?api-version=2021-04-12".format(sidecar.device)
    try:
        twin = wait_for("the components' properties are reported", lambda: (
            lambda twin: twin if "deviceInformation" in twin["properties"]["reported"] else None)(
                sidecar.hub("GET", twin_path).json()))
        assert twin["modelId"] == CONTROLLER_MODEL
        reported = twin["properties"]["reported"]
        assert reported["deviceInformation"]["__t"] == "c"
        assert reported["deviceInformation"]["manufacturer"] == "Contoso Device Corporation"
        assert reported["thermostat1"]["__t"] == "c" and "maxTempSinceLastReboot" in reported["thermostat1"]
        assert reported["serialNumber"].startswith("SN-")

        # Component telemetry: $.sub on the wire, the component name at the hub.
        seen = {}
        deadline = time.time() + 20
        while time.time() < deadline and len(seen) < 3:
            page = sidecar.telemetry(after=cursor, timeout=5)
            cursor = page["next"]
            for message in page["messages"]:
                seen.setdefault(message.get("componentName"), message)
        assert set(seen) == {"thermostat1", "thermostat2", None}, seen.keys()
        assert "%24.sub=thermostat1" in seen["thermostat1"]["rawProperties"]
        assert "$.sub" not in seen["thermostat1"]["properties"]
        assert seen["thermostat1"]["modelId"] == CONTROLLER_MODEL
        assert "temperature" in json.loads(seen["thermostat2"]["bodyText"])
        assert "workingSet" in json.loads(seen[None]["bodyText"])

        # A writable property of a component, acknowledged with the desired version.
        desired = sidecar.set_desired({"thermostat1": {"__t": "c", "targetTemperature": 25.5}})
        desired_version = desired["properties"]["desired"]["$version"]
        ack = wait_for("targetTemperature is acknowledged", lambda: sidecar.hub("GET", twin_path).json()[
            "properties"]["reported"]["thermostat1"].get("targetTemperature"))
        assert ack == {"value": 25.5, "ac": 200, "av": desired_version, "ad": "Successfully executed patch"}

        # A component command and a root command.
        report = sidecar.invoke_method("thermostat1*getMaxMinReport", payload="2024-01-01T00:00:00Z")
        report.join(40)
        assert report.reply.status == 200, report.reply
        assert report.reply.json()["status"] == 200
        assert set(report.reply.json()["payload"]) == {"maxTemp", "minTemp", "avgTemp", "startTime", "endTime"}
        reboot = sidecar.invoke_method("reboot", payload=5)
        reboot.join(40)
        assert reboot.reply.json() == {"status": 200, "payload": {"rebootedAfter": 5}}
        unknown = sidecar.invoke_method("thermostat3*getMaxMinReport")
        unknown.join(40)
        assert unknown.reply.json()["status"] == 404

        app.send_signal(signal.SIGTERM)
        assert app.wait(20) == 0
        output = app.stdout.read()
        assert "Traceback" not in output and "stopped" in output and "note:" not in output, output
    finally:
        if app.poll() is None:
            app.kill()
        sidecar.stop()
