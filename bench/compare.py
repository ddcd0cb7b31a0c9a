"""Every comparison of issue 7 in one run, against the same brokers: the sidecar next to
Microsoft's Python SDK, mosquitto_pub as the ceiling. Prints a markdown report and writes it to
docs/PERFORMANCE.md. Run through bench/run, which builds and installs what it needs.

Needs ports 8883, 8443 and 10000 free: the Python SDK connects to 8883 only."""
import asyncio
import base64
import http.client
import json
import os
import platform
import re
import secrets
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BINARY = os.environ["SIDECAR_BIN"]
WORK = tempfile.mkdtemp(prefix="bench-")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
# Throughput runs are repeated and the median run is reported: on a shared 2-core machine one
# run can be 30% off the next.
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
BODY = '{"seq":1,"temperature":21.5}'


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid, field="VmRSS"):
    with open("/proc/{}/status".format(pid)) as status:
        return int(re.search(r"^{}:\s+(\d+) kB".format(field), status.read(), re.M).group(1))


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def get(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def start_sidecar(args, port):
    process = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:{}".format(port), "--log-level", "error"] + args,
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "sidecar.err"), "ab"))
    started = time.perf_counter()
    while True:
        try:
            if get(port, "/readyz") == 200:
                return process, time.perf_counter() - started
        except OSError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 60:
            raise SystemExit("the sidecar did not become ready; see " + os.path.join(WORK, "sidecar.err"))
        time.sleep(0.002)


def stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def median_run(measure):
    """The run with the median rate of REPEAT runs of `measure` (which returns the rate first)."""
    runs = sorted((measure() for _ in range(REPEAT)), key=lambda run: run[0] if isinstance(run, tuple) else run)
    return runs[len(runs) // 2]


def wrk(port, connections, threads, script, path="/messages"):
    script_path = os.path.join(WORK, "wrk.lua")
    with open(script_path, "w") as file:
        file.write(script)
    output = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", "{}s".format(SECONDS), "--latency", "-s", script_path,
                             "http://127.0.0.1:{}{}".format(port, path)], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit("wrk saw failed requests:\n" + output)

    def milliseconds(label):
        value = re.search(r"^\s*{}\s+([\d.]+)(us|ms|s)$".format(re.escape(label)), output, re.M)
        number, unit = float(value.group(1)), value.group(2)
        return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M).group(1))
    return rate, milliseconds("50%"), milliseconds("99%")


SINGLE = 'wrk.method = "POST"\nwrk.body = \'{}\'\nwrk.headers["Content-Type"] = "application/json"\n'.format(BODY)
BATCH = 'wrk.method = "POST"\nwrk.body = [=[{}]=]\nwrk.headers["Content-Type"] = "application/vnd.microsoft.iothub.json"\n'.format(
    json.dumps([{"body": BODY} for _ in range(100)]))

SINGLE_ASYNC = SINGLE + 'wrk.headers["Prefer"] = "respond-async"\n'
BATCH_ASYNC = BATCH + 'wrk.headers["Prefer"] = "respond-async"\n'
# 100 messages of 10 kB each: how the outbox is filled for the drain and memory rows.
FILL_BATCH = json.dumps([{"body": "x" * 10_000} for _ in range(100)]).encode()

PYTHON_SDK = r'''
import asyncio, json, os, resource, statistics, sys, time
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.device.aio import IoTHubDeviceClient as AsyncClient
mode, cs, ca, n = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), int(sys.argv[4])
body = '{"seq":1,"temperature":21.5}'
def status(field):
    return int([l for l in open("/proc/self/status") if l.startswith(field)][0].split()[1])
if mode == "sync":
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
    client.connect()
    for _ in range(200):
        client.send_message(Message(body))
    idle, idle_anonymous = status("VmRSS"), status("RssAnon")
    durations = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter(); client.send_message(Message(body)); durations.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    client.shutdown()
    durations.sort()
    print(json.dumps({"rate": n / elapsed, "p50": statistics.median(durations) * 1000, "p99": durations[int(n * 0.99)] * 1000,
                      "idle_kib": idle, "idle_anonymous_kib": idle_anonymous, "peak_kib": status("VmHWM")}))
else:
    async def main():
        client = AsyncClient.create_from_connection_string(cs, server_verification_cert=ca)
        await client.connect()
        idle, idle_anonymous = status("VmRSS"), status("RssAnon")
        semaphore = asyncio.Semaphore(64)
        async def one():
            async with semaphore:
                await client.send_message(Message(body))
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
        await client.shutdown()
        print(json.dumps({"rate": n / elapsed, "idle_kib": idle, "idle_anonymous_kib": idle_anonymous, "peak_kib": status("VmHWM")}))
    asyncio.run(main())
'''


def python_sdk(mode, connection_string, ca, count):
    output = subprocess.run([sys.executable, "-c", PYTHON_SDK, mode, connection_string, ca, str(count)], capture_output=True, text=True)
    if output.returncode != 0:
        raise SystemExit("the Python SDK run failed:\n" + output.stderr[-3000:])
    return json.loads(output.stdout.strip().splitlines()[-1])


def mqtt_floor(ca, count):
    """bench/mqtt-rtt.c against the mosquitto broker: (rate, p50, p99) of one QoS-1 publish at a time."""
    program = os.path.join(WORK, "mqtt-rtt")
    if not os.path.exists(program):
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mqtt-rtt.c")
        subprocess.run(["cc", "-O2", "-o", program, source, "-lmosquitto", "-lpthread"], check=True)
    output = subprocess.run([program, "localhost", "8883", ca, "bench-floor", str(count)], capture_output=True, text=True, check=True)
    run = json.loads(output.stdout.strip().splitlines()[-1])
    return run["rate"], run["p50"], run["p99"]


def make_certificates():
    """A CA and a server certificate for localhost, made by LocalHub (as bench/localhub-throughput does)."""
    directory = os.path.join(WORK, "certs")
    hub = subprocess.Popen([BINARY, "hub", "--data-dir", directory, "--mqtt-port", "0", "--https-port", "0", "--blob-port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in hub.stdout:
        if line.strip() == "ready":
            break
    stop(hub)
    return directory


def mosquitto_phase(certificates, results):
    config = os.path.join(WORK, "mosquitto.conf")
    with open(config, "w") as file:
        file.write("listener 8883 127.0.0.1\nallow_anonymous true\ncertfile {0}/server-cert.pem\nkeyfile {0}/server-key.pem\n"
                   "tls_version tlsv1.2\npersistence false\nuser root\nlog_type error\n".format(certificates))
    broker = subprocess.Popen(["mosquitto", "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    ca = os.path.join(certificates, "ca.pem")
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        cs_file = os.path.join(WORK, "bench.cs")
        with open(cs_file, "w") as file:
            file.write("HostName=localhost;DeviceId=bench-sidecar;SharedAccessKey=" + key)
        port = free_port()
        sidecar, _ = start_sidecar(["--connection-string-file", cs_file, "--server-verification-cert", ca], port)
        time.sleep(2)
        results["sidecar_idle_kib"] = rss_kib(sidecar.pid)
        results["sidecar_idle_anonymous_kib"] = rss_kib(sidecar.pid, "RssAnon")
        # One message at a time, next to its floor in the same rounds: the HTTP round trip alone
        # (no hub) and the MQTT round trip alone (libmosquitto in C: no HTTP, no Swift).
        sequential = {"m_sidecar_seq": [], "m_floor_http": [], "m_floor_mqtt": []}
        for _ in range(REPEAT):
            sequential["m_sidecar_seq"].append(wrk(port, 1, 1, SINGLE))
            sequential["m_floor_http"].append(wrk(port, 1, 1, "", path="/healthz"))
            sequential["m_floor_mqtt"].append(mqtt_floor(ca, 3000))
        for name, runs in sequential.items():
            results[name] = sorted(runs, key=lambda run: run[1])[len(runs) // 2]
        python_cs = "HostName=localhost;DeviceId=bench-python;SharedAccessKey=" + key
        lines = os.path.join(WORK, "lines")
        with open(lines, "w") as file:
            file.write("\n".join(BODY for _ in range(100000)) + "\n")

        def mosquitto_pub():
            started = time.perf_counter()
            subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", "8883", "--cafile", ca, "-V", "mqttv311", "-q", "1", "-l", "-i", "bench-pub",
                            "-t", "devices/bench-pub/messages/events/"], stdin=open(lines), check=True)
            return 100000 / (time.perf_counter() - started)

        # Each throughput figure is compared with its peer's from the same rounds: the rounds
        # interleave them, so a slow minute of the shared machine falls on both sides.
        rounds = {"m_sidecar_64": [], "m_python_async": [], "m_sidecar_batch": [], "m_mosquitto_pub": [], "m_sidecar_healthz": []}
        for _ in range(REPEAT):
            rounds["m_sidecar_64"].append(wrk(port, 64, 2, SINGLE))
            rounds["m_python_async"].append(python_sdk("async", python_cs, ca, 20000))
            rounds["m_sidecar_batch"].append(wrk(port, 8, 2, BATCH))
            rounds["m_mosquitto_pub"].append(mosquitto_pub())
            # The HTTP stack alone (no hub round trip): the ceiling single messages are measured against.
            rounds["m_sidecar_healthz"].append(wrk(port, 64, 2, "", path="/healthz"))
        for name, runs in rounds.items():
            results[name] = sorted(runs, key=lambda run: run["rate"] if isinstance(run, dict) else run[0] if isinstance(run, tuple) else run)[len(runs) // 2]
        results["sidecar_peak_kib"] = rss_kib(sidecar.pid, "VmHWM")
        stop(sidecar)
        results["m_python_sync"] = python_sdk("sync", python_cs, ca, 3000)
    finally:
        stop(broker)


def service_call(https_port, ca, token, path, body):
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection("localhost", https_port, context=context, timeout=60)
    try:
        connection.request("POST" if body is not None else "PUT", path, body=json.dumps(body or {}),
                           headers={"Authorization": token, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def method_round_trips(https_port, ca, token, device, count=200):
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        status, answer = service_call(https_port, ca, token, "/twins/{}/methods?api-version=2021-04-12".format(device),
                                      {"methodName": "ping", "payload": {}, "responseTimeoutInSeconds": 10})
        durations.append(time.perf_counter() - started)
        assert status == 200 and answer["status"] == 200, answer
    return statistics.median(durations) * 1000, percentile(durations, 0.99) * 1000


def localhub_phase(results):
    data = os.path.join(WORK, "localhub")
    port = free_port()
    sidecar, _ = start_sidecar(["--local-hub", "--local-hub-data-dir", data], port)
    ca = os.path.join(data, "ca.pem")
    token = subprocess.run([BINARY, "sas-token", "--connection-string-file", os.path.join(data, "service-connection-string")],
                           capture_output=True, text=True, check=True).stdout.strip()
    try:
        results["l_sidecar_seq"] = wrk(port, 1, 1, SINGLE)
        status, device = service_call(8443, ca, token, "/devices/python-peer?api-version=2021-04-12", None)
        python_cs = "HostName=localhost;DeviceId=python-peer;SharedAccessKey=" + device["authentication"]["symmetricKey"]["primaryKey"]
        results["l_python_sync"] = python_sdk("sync", python_cs, ca, 3000)

        # Direct methods through the sidecar's long-poll, answered by a poller loop.
        stopping = threading.Event()

        def answer_methods():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while not stopping.is_set():
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("GET", "/methods?timeout=1")
                response = connection.getresponse()
                body = response.read()
                if response.status == 200:
                    request_id = json.loads(body)["requestId"]
                    answer = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    answer.request("POST", "/methods/{}/response".format(request_id), body='{"status":200,"payload":{}}',
                                   headers={"Content-Type": "application/json"})
                    answer.getresponse().read()
        poller = threading.Thread(target=answer_methods, daemon=True)
        poller.start()
        results["rtt_sidecar"] = method_round_trips(8443, ca, token, "sidecar-device")
        stopping.set()
        poller.join(5)

        # The same through the Python SDK's handler.
        handler = subprocess.Popen([sys.executable, "-c", r'''
import sys, time
from azure.iot.device import IoTHubDeviceClient, MethodResponse
client = IoTHubDeviceClient.create_from_connection_string(sys.argv[1], server_verification_cert=open(sys.argv[2]).read())
client.on_method_request_received = lambda request: client.send_method_response(MethodResponse.create_from_method_request(request, 200, {}))
client.connect()
print("ready", flush=True)
time.sleep(600)
''', python_cs, ca], stdout=subprocess.PIPE, text=True)
        handler.stdout.readline()
        time.sleep(1)
        results["rtt_python"] = method_round_trips(8443, ca, token, "python-peer")
        handler.kill()
    finally:
        stop(sidecar)
    # Cold start: process start until /readyz answers 200, with the local hub's state in place.
    starts = []
    for _ in range(5):
        process, elapsed = start_sidecar(["--local-hub", "--local-hub-data-dir", data], port)
        starts.append(elapsed * 1000)
        stop(process)
    results["cold_start_ms"] = statistics.median(starts)


def outbox_status(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/outbox")
    return json.loads(connection.getresponse().read())


def wait_for_empty_outbox(port, timeout=600):
    deadline = time.time() + timeout
    while outbox_status(port)["messages"] > 0:
        if time.time() > deadline:
            raise SystemExit("the outbox did not empty")
        time.sleep(0.05)


def fill_outbox(port, target_bytes):
    """Async batches of 100 × 10 kB from 8 threads until `target_bytes` are accepted."""
    sent = [0]
    lock = threading.Lock()

    def run():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if sent[0] >= target_bytes:
                    return
                sent[0] += len(FILL_BATCH)
            connection.request("POST", "/messages", body=FILL_BATCH,
                               headers={"Content-Type": "application/vnd.microsoft.iothub.json", "Prefer": "respond-async"})
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                raise SystemExit("filling the outbox: {}".format(response.status))
    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def outbox_phase(results):
    """Store and forward (LocalHub): accepting with Prefer: respond-async against the synchronous
    path, in alternating rounds with the outbox emptied in between; a 100,000-message backlog
    drained after an outage; memory with 1 GB on disk."""
    data = os.path.join(WORK, "outbox-hub")
    state = os.path.join(WORK, "outbox-state")
    port = free_port()
    sidecar, _ = start_sidecar(["--local-hub", "--local-hub-data-dir", data, "--state-dir", state, "--outbox-max-bytes", str(4 << 30)], port)
    ca = os.path.join(data, "ca.pem")
    token = subprocess.run([BINARY, "sas-token", "--connection-string-file", os.path.join(data, "service-connection-string")],
                           capture_output=True, text=True, check=True).stdout.strip()
    try:
        rounds = {key: [] for key in ("o_sync_64", "o_async_64", "o_sync_batch", "o_async_batch")}
        for _ in range(REPEAT):
            rounds["o_sync_64"].append(wrk(port, 64, 2, SINGLE))
            rounds["o_async_64"].append(wrk(port, 64, 2, SINGLE_ASYNC))
            wait_for_empty_outbox(port)
            rounds["o_sync_batch"].append(wrk(port, 8, 2, BATCH))
            rounds["o_async_batch"].append(wrk(port, 8, 2, BATCH_ASYNC))
            wait_for_empty_outbox(port)
        for key, runs in rounds.items():
            results[key] = sorted(runs)[len(runs) // 2]
        # An outage: the hub refuses connections while 100,000 messages wait, then comes back.
        def hub_call(method, path, body=None):
            context = ssl.create_default_context(cafile=ca)
            connection = http.client.HTTPSConnection("localhost", 8443, context=context, timeout=30)
            headers = {"Authorization": token}
            if body is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            connection.getresponse().read()
        idle_kib = rss_kib(sidecar.pid)
        hub_call("PUT", "/local/faults", {"refuseConnectionsSeconds": 3600})
        hub_call("POST", "/local/devices/sidecar-device/disconnect")
        time.sleep(1)
        small = json.dumps([{"body": BODY} for _ in range(100)]).encode()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(1000):
            connection.request("POST", "/messages", body=small,
                               headers={"Content-Type": "application/vnd.microsoft.iothub.json", "Prefer": "respond-async"})
            response = connection.getresponse()
            response.read()
        backlog = outbox_status(port)["messages"]
        hub_call("DELETE", "/local/faults")
        # The drain is timed from the reconnection (the client's retry interval is not the
        # outbox's speed); messages sent before /readyz answers count as drained in no time.
        back = time.perf_counter()
        while get(port, "/readyz") != 200:
            time.sleep(0.01)
        started = time.perf_counter()
        left = outbox_status(port)["messages"]
        wait_for_empty_outbox(port)
        results["o_drain"] = left / (time.perf_counter() - started)
        results["o_drain_backlog"] = backlog
        results["o_reconnect_s"] = started - back
        # Memory: idle (connected, empty outbox) against 1 GB waiting on disk, and during its drain.
        hub_call("PUT", "/local/faults", {"refuseConnectionsSeconds": 3600})
        hub_call("POST", "/local/devices/sidecar-device/disconnect")
        time.sleep(1)
        fill_outbox(port, 1 << 30)
        time.sleep(2)
        full = outbox_status(port)
        results["o_rss_idle_kib"] = idle_kib
        results["o_rss_full_kib"] = rss_kib(sidecar.pid)
        results["o_full_bytes"] = full["bytes"]
        hub_call("DELETE", "/local/faults")
        peak = 0
        deadline = time.time() + 900
        while outbox_status(port)["messages"] > 0 and time.time() < deadline:
            peak = max(peak, rss_kib(sidecar.pid))
            time.sleep(0.2)
        results["o_rss_drain_peak_kib"] = peak
    finally:
        stop(sidecar)


def outbox_section(results):
    """Section 7 of the report: store and forward."""
    return [
        "",
        "## 7. Store and forward (LocalHub)",
        "",
        "`POST /messages` answered 200 after the hub's acknowledgement (synchronous) or 202 once the message is synced to the "
        "outbox on disk (`Prefer: respond-async`); the runs alternate, and the outbox is emptied after each asynchronous run.",
        "",
        "| | synchronous msg/s | asynchronous msg/s | async ÷ sync | p50 sync | p50 async |",
        "|---|---:|---:|---:|---:|---:|",
        "| single messages, 64 connections (wrk -t2 -c64) | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} |".format(
            results["o_sync_64"][0], results["o_async_64"][0], results["o_async_64"][0] / results["o_sync_64"][0],
            results["o_sync_64"][1], results["o_async_64"][1]),
        "| batches of 100, 8 connections (wrk -t2 -c8) | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} |".format(
            results["o_sync_batch"][0] * 100, results["o_async_batch"][0] * 100, results["o_async_batch"][0] / results["o_sync_batch"][0],
            results["o_sync_batch"][1], results["o_async_batch"][1]),
        "",
        "Drain after an outage: a backlog of {:,} messages sent, once the client had reconnected ({:.1f} s after the hub "
        "came back), at **{:.0f} msg/s** ({:.2f}× the synchronous batch throughput).".format(
            results["o_drain_backlog"], results["o_reconnect_s"], results["o_drain"],
            results["o_drain"] / (results["o_sync_batch"][0] * 100)),
        "",
        "Memory: RSS {:.1f} MB idle; {:.1f} MB with {:.0f} MB waiting on disk; {:.1f} MB at most while it drained.".format(
            results["o_rss_idle_kib"] / 1024, results["o_rss_full_kib"] / 1024, results["o_full_bytes"] / (1 << 20),
            results["o_rss_drain_peak_kib"] / 1024),
    ]


def transport_phase(results):
    """POST /messages over MQTT/TLS and over MQTT/WebSockets (the tunnel), against LocalHub."""
    data = os.path.join(WORK, "localhub")
    for name, args in (("tls", []), ("wss", ["--websockets"])):
        port = free_port()
        sidecar, _ = start_sidecar(["--local-hub", "--local-hub-data-dir", data] + args, port)
        try:
            results["t_{}_seq".format(name)] = wrk(port, 1, 1, SINGLE)
            results["t_{}_64".format(name)] = median_run(lambda: wrk(port, 64, 2, SINGLE))
            results["t_{}_batch".format(name)] = median_run(lambda: wrk(port, 8, 2, BATCH))
        finally:
            stop(sidecar)


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        match = re.search(r"^model name\s*:\s*(.*)$", info.read(), re.M)
        if match:
            cpu = match.group(1)
    mosquitto_version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return "{} cores ({}), {} GiB, Linux {}, {}, Python {}".format(
        os.cpu_count(), cpu, round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30), platform.release(),
        mosquitto_version, platform.python_version())


def report(results):
    m, l = results, results
    sync_p50 = m["m_python_sync"]["p50"]
    lines = [
        "# Performance",
        "",
        "Written by `bench/run` on {} ({}); all figures from one run. The sidecar is built as deploy/Dockerfile "
        "builds it (release, Swift runtime linked statically). QoS 1, TLS 1.2, loopback. "
        "wrk runs {} s each; throughput rows are the median of {} runs (in section 2 the runs of every client alternate, "
        "so each is measured under the same load of the shared machine as its peer). p50/p99 in milliseconds.".format(
            time.strftime("%Y-%m-%d"), machine(), SECONDS, REPEAT),
        "",
        "## 1. Telemetry latency, one client, one message at a time",
        "",
        "| broker | client | msg/s | p50 | p99 |",
        "|---|---|---:|---:|---:|",
        "| mosquitto | sidecar `POST /messages` (wrk -c1) | {:.0f} | {:.2f} | {:.2f} |".format(*m["m_sidecar_seq"]),
        "| mosquitto | Python SDK `send_message` | {:.0f} | {:.2f} | {:.2f} |".format(m["m_python_sync"]["rate"], sync_p50, m["m_python_sync"]["p99"]),
        "| mosquitto | *floor:* sidecar `GET /healthz`, no hub (wrk -c1) | {:.0f} | {:.3f} | {:.3f} |".format(*m["m_floor_http"]),
        "| mosquitto | *floor:* bare libmosquitto QoS-1 publish→PUBACK, no HTTP (bench/mqtt-rtt.c) | {:.0f} | {:.3f} | {:.3f} |".format(
            *m["m_floor_mqtt"]),
        "| LocalHub | sidecar `POST /messages` (wrk -c1) | {:.0f} | {:.2f} | {:.2f} |".format(*l["l_sidecar_seq"]),
        "| LocalHub | Python SDK `send_message` | {:.0f} | {:.2f} | {:.2f} |".format(
            l["l_python_sync"]["rate"], l["l_python_sync"]["p50"], l["l_python_sync"]["p99"]),
        "",
        "Sequential p50 against mosquitto as floor + overhead: {:.3f} ms = {:.3f} (HTTP floor) + {:.3f} (MQTT floor) + "
        "{:.0f} µs of the sidecar's own (goal: at most 50 µs). The three are medians of {} alternating rounds.".format(
            m["m_sidecar_seq"][1], m["m_floor_http"][1], m["m_floor_mqtt"][1],
            (m["m_sidecar_seq"][1] - m["m_floor_http"][1] - m["m_floor_mqtt"][1]) * 1000, REPEAT),
        "",
        "## 2. Telemetry throughput (mosquitto)",
        "",
        "| client | msg/s |",
        "|---|---:|",
        "| sidecar, 64 keep-alive connections, single messages (wrk -t2 -c64) | {:.0f} |".format(m["m_sidecar_64"][0]),
        "| sidecar, batches of 100, 8 connections (wrk -t2 -c8) | {:.0f} |".format(m["m_sidecar_batch"][0] * 100),
        "| Python asyncio SDK, 64 concurrent sends | {:.0f} |".format(m["m_python_async"]["rate"]),
        "| *ceiling:* sidecar `GET /healthz`, no hub round trip (wrk -t2 -c64) | {:.0f} |".format(m["m_sidecar_healthz"][0]),
        "| `mosquitto_pub -q 1 -l` | {:.0f} |".format(m["m_mosquitto_pub"]),
        "",
        "## 3. Memory (RSS)",
        "",
        "RSS counts the pages of the program and its libraries that the process has mapped (shared, read from the",
        "file, dropped by the kernel under pressure) and its anonymous memory (heap, stacks: its own).",
        "",
        "| process | idle, connected | of which anonymous | peak |",
        "|---|---:|---:|---:|",
        "| sidecar (peak: during 1 and 2) | {:.1f} MB | {:.1f} MB | {:.1f} MB |".format(
            m["sidecar_idle_kib"] / 1024, m["sidecar_idle_anonymous_kib"] / 1024, m["sidecar_peak_kib"] / 1024),
        "| Python SDK, sync (peak: during 1) | {:.1f} MB | {:.1f} MB | {:.1f} MB |".format(
            m["m_python_sync"]["idle_kib"] / 1024, m["m_python_sync"]["idle_anonymous_kib"] / 1024, m["m_python_sync"]["peak_kib"] / 1024),
        "| Python SDK, asyncio (peak: during 2) | {:.1f} MB | {:.1f} MB | {:.1f} MB |".format(
            m["m_python_async"]["idle_kib"] / 1024, m["m_python_async"]["idle_anonymous_kib"] / 1024, m["m_python_async"]["peak_kib"] / 1024),
        "",
        "## 4. Direct-method round trip (LocalHub, service API call until the answer)",
        "",
        "| device side | p50 | p99 |",
        "|---|---:|---:|",
        "| sidecar `GET /methods` long-poll + `POST /methods/{{id}}/response` | {:.2f} | {:.2f} |".format(*results["rtt_sidecar"]),
        "| Python SDK `on_method_request_received` handler | {:.2f} | {:.2f} |".format(*results["rtt_python"]),
        "",
        "## 5. Cold start",
        "",
        "Process start until `/readyz` answers 200, with the embedded LocalHub (its state already on disk), median of 5: "
        "**{:.0f} ms**.".format(results["cold_start_ms"]),
        "",
        "## 6. Transports: MQTT over TLS vs MQTT over WebSockets (LocalHub)",
        "",
        "The same sidecar, `--websockets` or not. Over WebSockets every byte also passes the device client's "
        "tunnel (libmosquitto → unix socket → NIO → WebSocket frame → TLS).",
        "",
        "| sidecar `POST /messages` | TLS msg/s | WebSockets msg/s | WebSockets ÷ TLS | p50 TLS | p50 WebSockets |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key, factor in (("one at a time (wrk -c1)", "seq", 1), ("64 connections (wrk -t2 -c64)", "64", 1),
                               ("batches of 100, 8 connections (wrk -t2 -c8)", "batch", 100)):
        tls, wss = results["t_tls_" + key], results["t_wss_" + key]
        lines.append("| {} | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} |".format(
            label, tls[0] * factor, wss[0] * factor, wss[0] / tls[0], tls[1], wss[1]))
    lines += outbox_section(results)
    lines += [
        "",
        "## Against the targets of issue 7",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    checks = [
        ("(1) sidecar p50 ≤ ½ Python `send_message` p50 (mosquitto)", "{:.2f} vs {:.2f} ms".format(m["m_sidecar_seq"][1], sync_p50),
         m["m_sidecar_seq"][1] <= sync_p50 / 2),
        ("(2) single-message throughput ≥ 10× Python asyncio", "{:.1f}×".format(m["m_sidecar_64"][0] / m["m_python_async"]["rate"]),
         m["m_sidecar_64"][0] >= 10 * m["m_python_async"]["rate"]),
        ("(2) batched throughput ≥ 40% of mosquitto_pub", "{:.0f}%".format(100 * m["m_sidecar_batch"][0] * 100 / m["m_mosquitto_pub"]),
         m["m_sidecar_batch"][0] * 100 >= 0.4 * m["m_mosquitto_pub"]),
        ("(3) idle RSS ≤ ½ Python SDK's", "{:.1f} vs {:.1f} MB".format(m["sidecar_idle_kib"] / 1024, m["m_python_sync"]["idle_kib"] / 1024),
         m["sidecar_idle_kib"] <= m["m_python_sync"]["idle_kib"] / 2),
        ("(3) peak RSS under (2) ≤ 48 MB", "{:.1f} MB".format(m["sidecar_peak_kib"] / 1024), m["sidecar_peak_kib"] <= 48 * 1024),
        ("(4) method round-trip p50 ≤ Python SDK's", "{:.2f} vs {:.2f} ms".format(results["rtt_sidecar"][0], results["rtt_python"][0]),
         results["rtt_sidecar"][0] <= results["rtt_python"][0]),
        ("(5) ready within 200 ms", "{:.0f} ms".format(results["cold_start_ms"]), results["cold_start_ms"] <= 200),
        ("store and forward: async singles ≥ 0.8× sync singles", "{:.2f}×".format(results["o_async_64"][0] / results["o_sync_64"][0]),
         results["o_async_64"][0] >= 0.8 * results["o_sync_64"][0]),
        ("store and forward: async batches ≥ 0.8× sync batches", "{:.2f}×".format(results["o_async_batch"][0] / results["o_sync_batch"][0]),
         results["o_async_batch"][0] >= 0.8 * results["o_sync_batch"][0]),
        ("store and forward: drain ≥ 0.8× sync batches", "{:.2f}×".format(results["o_drain"] / (results["o_sync_batch"][0] * 100)),
         results["o_drain"] >= 0.8 * results["o_sync_batch"][0] * 100),
        ("store and forward: RSS with 1 GB on disk within 10 MB of idle", "{:+.1f} MB".format((results["o_rss_full_kib"] - results["o_rss_idle_kib"]) / 1024),
         results["o_rss_full_kib"] - results["o_rss_idle_kib"] <= 10 * 1024),
    ]
    lines += ["| {} | {} | {} |".format(name, value, "yes" if ok else "**no**") for name, value, ok in checks]
    return "\n".join(lines) + "\n"


# bench/run rewrites docs/PERFORMANCE.md; what follows this line there (measurements by other
# benchmarks, such as bench/store) is kept.
KEPT_MARKER = "<!-- Below: measurements by other benchmarks; bench/run keeps this part. -->"


def main():
    results = {}
    if os.environ.get("BENCH_ONLY") == "outbox":
        # Only the store-and-forward phase, printed, not written: for a quick look.
        outbox_phase(results)
        print("\n".join(outbox_section(results)))
        return
    certificates = make_certificates()
    mosquitto_phase(certificates, results)
    localhub_phase(results)
    transport_phase(results)
    outbox_phase(results)
    text = report(results)
    print(text)
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "PERFORMANCE.md")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    kept = ""
    if os.path.exists(target):
        with open(target) as file:
            previous = file.read()
        if KEPT_MARKER in previous:
            kept = "\n" + KEPT_MARKER + previous.split(KEPT_MARKER, 1)[1]
    with open(target, "w") as file:
        file.write(text + kept)


if __name__ == "__main__":
    main()
