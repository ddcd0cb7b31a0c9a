"""examples/device_app.py against a live sidecar and its local hub: its telemetry arrives, it
follows a desired property and reports it, and it answers methods (and stops on `stop`)."""
import os
import subprocess
import sys
import time

from sidecar_support import Sidecar, free_port

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "device_app.py")


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
