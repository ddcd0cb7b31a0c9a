#!/usr/bin/env python3
"""A small device application that uses Azure IoT Hub only through iothub-sidecar, with nothing
but Python's standard library:

* sends a telemetry message every `telemetryInterval` seconds (5 by default);
* follows the desired property `telemetryInterval` and reports the value it uses;
* answers the direct methods `getStatus` (how many messages were sent) and `stop` (answers,
  then exits).

    SIDECAR_URL=http://127.0.0.1:8080 python3 examples/device_app.py

With an API token, set SIDECAR_TOKEN too. Run it next to `scripts/run` (the sidecar with its
local hub), then, from another shell, change the interval or call a method through the hub.

It may start before the sidecar (containers in a pod or a compose project start together): it
waits for the sidecar to answer, retrying with a growing pause up to 5 s, for at most
SIDECAR_WAIT seconds (120 by default), and says so while it waits.
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

SIDECAR = urllib.parse.urlsplit(os.environ.get("SIDECAR_URL", "http://127.0.0.1:8080"))
TOKEN = os.environ.get("SIDECAR_TOKEN")


def call(method, path, body=None, headers=None, timeout=70):
    """One request to the sidecar; returns (status, parsed JSON or None, headers)."""
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
        parsed = json.loads(data) if data and response.getheader("Content-Type", "").endswith("json") else None
        return response.status, parsed, response.headers
    finally:
        connection.close()


def wait_for_sidecar(limit=None):
    """Waits until the sidecar answers /healthz; exits with a message after `limit` seconds."""
    limit = float(os.environ.get("SIDECAR_WAIT", "120")) if limit is None else limit
    deadline = time.monotonic() + limit
    pause = 0.25
    while True:
        try:
            status, _, _ = call("GET", "/healthz", timeout=5)
            if status == 200:
                return
            reason = "it answered {}".format(status)
        except OSError as error:
            reason = error.strerror or str(error)
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit("device_app: the sidecar at {} did not answer within {:g} s ({}); is it running?".format(
                SIDECAR.geturl(), limit, reason))
        pause = min(pause * 2, 5.0, left)
        print("waiting for the sidecar at {} ({}); trying again in {:.1f} s".format(SIDECAR.geturl(), reason, pause), flush=True)
        time.sleep(pause)


class Device:
    def __init__(self):
        self.interval = 5.0
        self.sent = 0
        self.stopping = threading.Event()

    def follow_desired_properties(self):
        version = 0
        while not self.stopping.is_set():
            try:
                status, update, _ = call("GET", "/twin/desired?since={}&timeout=20".format(version))
            except OSError:
                time.sleep(1)
                continue
            if status == 200:
                version = update["version"]
                interval = update["desired"].get("telemetryInterval")
                if isinstance(interval, (int, float)) and interval > 0:
                    self.interval = float(interval)
                    call("PATCH", "/twin", {"telemetryInterval": interval})
                    print("telemetry interval is now", interval, "s", flush=True)
            elif status != 204:
                time.sleep(1)

    def answer_methods(self):
        while not self.stopping.is_set():
            try:
                status, request, _ = call("GET", "/methods?timeout=20")
            except OSError:
                time.sleep(1)
                continue
            if status != 200:
                if status != 204:
                    time.sleep(1)
                continue
            name = request["methodName"]
            if name == "getStatus":
                answer = {"status": 200, "payload": {"sent": self.sent, "interval": self.interval}}
            elif name == "stop":
                answer = {"status": 200, "payload": {"stopping": True}}
            else:
                answer = {"status": 404, "payload": {"error": "no method " + name}}
            call("POST", "/methods/{}/response".format(urllib.parse.quote(request["requestId"], safe="")), answer)
            print("answered", name, flush=True)
            if name == "stop":
                self.stopping.set()

    def send_telemetry(self):
        while not self.stopping.is_set():
            body = json.dumps({"seq": self.sent + 1, "temperature": 21.5}).encode()
            try:
                status, result, _ = call("POST", "/messages", body, {
                    "Content-Type": "application/json", "iothub-contentencoding": "utf-8", "iothub-app-source": "device_app"})
            except OSError as error:
                # The sidecar restarts: wait for it again, then send the same message.
                print("the sidecar went away ({}); waiting for it".format(error.strerror or error), file=sys.stderr, flush=True)
                wait_for_sidecar()
                continue
            if status == 200:
                self.sent += 1
            else:
                print("sending failed:", status, result, file=sys.stderr, flush=True)
            self.stopping.wait(self.interval)


def main():
    wait_for_sidecar()
    device = Device()
    for worker in (device.follow_desired_properties, device.answer_methods):
        threading.Thread(target=worker, daemon=True).start()
    device.send_telemetry()
    print("stopped after", device.sent, "messages", flush=True)


if __name__ == "__main__":
    main()
