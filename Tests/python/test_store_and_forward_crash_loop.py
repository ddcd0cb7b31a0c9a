"""Store and forward under a crash loop (issue: nothing accepted is ever lost).

A client sends 20,000 messages with `Prefer: respond-async` while the sidecar is killed with
SIGKILL at random points six times and restarted on the same state directory, and the hub (a
LocalHub in its own process, which keeps what it received) drops the connection, refuses
connections for a while and delays its acknowledgements. At the end every message that was
answered 202 is at the hub, and every copy carries its message's id."""
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import http.client
import json

from sidecar_support import BINARY, Sidecar, StandaloneHub, free_port

DEVICE = "crash-device"
TOTAL = 20_000


class RestartingSidecar:
    """The sidecar as a process that can be killed and started again on one state directory."""

    def __init__(self, hub, state_dir):
        self.hub = hub
        self.state_dir = state_dir
        self.port = free_port()
        self.process = None
        self.log_path = os.path.join(os.path.dirname(state_dir), "sidecar-{}.log".format(self.port))
        self.starts = 0

    def start(self):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IOTHUB_")}
        environment["IOTHUB_DEVICE_CONNECTION_STRING"] = self.hub.connection_string
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:{}".format(self.port), "--state-dir", self.state_dir,
             "--telemetry-delivery", "async", "--server-verification-cert", os.path.join(self.hub.data_dir, "ca.pem"),
             "--mqtt-port", str(self.hub.mqtt_port), "--https-port", str(self.hub.https_port), "--connection-retry-interval", "1"],
            env=environment, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the sidecar exited with {}: {}".format(self.process.returncode, self.output()[-3000:]))
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the sidecar did not start: " + self.output()[-3000:])

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def output(self):
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")

    def get_json(self, path):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        return json.loads(response.read())


class Sender:
    """Threads that send numbered messages (singles and batches of 50) and record which were
    answered 202."""

    def __init__(self, sidecar, threads=12):
        self.sidecar = sidecar
        self.next = 0
        self.lock = threading.Lock()
        self.accepted = set()
        self.attempts = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def take(self, count):
        with self.lock:
            if self.next >= TOTAL:
                return None
            start = self.next
            self.next = min(TOTAL, self.next + count)
            return range(start, self.next)

    def run(self):
        while True:
            numbers = self.take(random.choice([1, 1, 50]))
            if numbers is None:
                return
            # As a real client does: again, with the same ids, until the sidecar says 202.
            while not self.send(numbers):
                time.sleep(0.05)

    def send(self, numbers):
        """Whether the sidecar answered 202."""
        with self.lock:
            self.attempts += len(numbers)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.sidecar.port, timeout=30)
            if len(numbers) == 1:
                number = numbers[0]
                connection.request("POST", "/messages", body="message {}".format(number).encode(),
                                   headers={"Prefer": "respond-async", "iothub-messageid": "m-{}".format(number)})
            else:
                batch = [{"body": "message {}".format(n), "properties": {"iothub-messageid": "m-{}".format(n)}} for n in numbers]
                connection.request("POST", "/messages", body=json.dumps(batch).encode(),
                                   headers={"Prefer": "respond-async", "Content-Type": "application/vnd.microsoft.iothub.json"})
            response = connection.getresponse()
            response.read()
            if response.status == 202:
                with self.lock:
                    self.accepted.update("m-{}".format(n) for n in numbers)
                return True
            return False
        except OSError:
            # The sidecar was killed under this request: not answered 202.
            return False

    def start(self):
        for thread in self.threads:
            thread.start()

    def running(self):
        return any(thread.is_alive() for thread in self.threads)

    def join(self):
        for thread in self.threads:
            thread.join(120)


def hub_telemetry(hub, session):
    """Every telemetry message the hub recorded for the device, in order: (message id, redelivered)."""
    records = []
    after = 0
    while True:
        reply = session.hub("GET", "/local/telemetry?after={}&timeout=0&limit=1000&deviceId={}".format(after, DEVICE))
        assert reply.status == 200, reply
        page = reply.json()
        records += [(message.get("messageId"), message.get("redelivered", False)) for message in page["messages"]]
        if not page["messages"] or page["next"] == after:
            return records
        after = page["next"]


def test_nothing_answered_202_is_lost_across_kills_and_hub_faults():
    hub = StandaloneHub(DEVICE)
    work = tempfile.mkdtemp(prefix="crash-loop-")
    state_dir = os.path.join(work, "state")
    sidecar = RestartingSidecar(hub, state_dir)
    # Talks to the hub's service and /local APIs with its data directory.
    session = Sidecar.__new__(Sidecar)
    session.hub_data_dir, session.hub_https_port, session._service_token, session.device = hub.data_dir, hub.https_port, None, DEVICE
    try:
        sidecar.start()
        sender = Sender(sidecar)
        sender.start()
        kills = 0
        faults = []
        random.seed(7)
        # Kills at points spread over the run (by progress: the machine's speed does not matter),
        # each a little after its threshold.
        for threshold in [0.12, 0.27, 0.41, 0.56, 0.70, 0.85]:
            while sender.running() and sender.next < threshold * TOTAL:
                time.sleep(0.01)
            time.sleep(random.uniform(0.0, 0.1))
            if kills in (1, 2, 3):
                fault = [{"refuseConnectionsSeconds": 2}, {"acknowledgementDelayMilliseconds": 800}, None][kills - 1]
                if fault is None:
                    session.hub("POST", "/local/devices/{}/disconnect".format(DEVICE))
                    faults.append("drop")
                else:
                    session.hub("PUT", "/local/faults", body=fault)
                    faults.append(next(iter(fault)))
                time.sleep(0.3)
            sidecar.kill()
            kills += 1
            time.sleep(random.uniform(0.05, 0.4))
            session.hub("DELETE", "/local/faults")
            sidecar.start()
        sender.join()
        assert kills >= 5 and len(faults) >= 2, (kills, faults)
        # The last run drains the outbox.
        deadline = time.time() + 120
        while time.time() < deadline and sidecar.get_json("/outbox")["messages"] > 0:
            time.sleep(0.5)
        outbox = sidecar.get_json("/outbox")
        assert outbox["messages"] == 0, outbox
        records = hub_telemetry(hub, session)
        at_hub = [message_id for message_id, _ in records]
        unique = set(at_hub)
        lost = sender.accepted - unique
        copies = len(at_hub) - len(unique)
        report = "sent {} (attempted), answered 202: {}, at the hub: {} ({} distinct), copies: {}, kills: {}, hub faults: {}".format(
            sender.attempts, len(sender.accepted), len(at_hub), len(unique), copies, kills, faults)
        print(report)
        with open(os.path.join(os.path.dirname(__file__), "..", "..", ".build", "crash-loop-report.txt"), "w") as out:
            out.write(report + "\n")
        assert not lost, "{} messages answered 202 never reached the hub, e.g. {}; {}".format(len(lost), sorted(lost)[:5], report)
        assert all(message_id and message_id.startswith("m-") for message_id in at_hub), "a copy without its message's id"
        assert len(sender.accepted) > TOTAL // 2, report
    finally:
        sidecar.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
