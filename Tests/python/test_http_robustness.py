"""The sidecar's HTTP server facing unusual or hostile clients, over raw sockets: running out of
file descriptors, request bodies that stop arriving, HTTP/1.0 and `Connection: close`, and
malformed or ambiguous message framing (request smuggling)."""
import json
import os
import resource
import socket
import time

import pytest

from sidecar_support import Sidecar, quote

BODY_TIMEOUT = 2


@pytest.fixture(scope="module")
def sidecar():
    # The request body timeout comes from the environment here (the flag is checked in
    # test_sidecar_lifecycle.py).
    instance = Sidecar(env={"IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT": str(BODY_TIMEOUT)}).wait_ready()
    yield instance
    assert instance.stop() == 0, instance.output()


class Response:
    def __init__(self, version, status, headers, body):
        self.version = version
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        values = self.headers.get(name.lower())
        return ", ".join(values) if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response({} {}, {!r}, {!r})".format(self.version, self.status, self.headers, self.body[:300])


class Connection:
    """One TCP connection to the sidecar, written and read byte by byte as the test says."""

    def __init__(self, sidecar, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", sidecar.port), timeout=timeout)
        self.pending = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode("latin-1"))

    def close(self):
        self.sock.close()

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the sidecar closed the connection; read so far: {!r}".format(self.pending))
        self.pending += data

    def _until(self, marker, deadline):
        while marker not in self.pending:
            self._fill(deadline)
        found, self.pending = self.pending.split(marker, 1)
        return found

    def _exactly(self, count, deadline):
        while len(self.pending) < count:
            self._fill(deadline)
        found, self.pending = self.pending[:count], self.pending[count:]
        return found

    def response(self, timeout=10, head_only=False):
        """The next response: its head, and its body by Content-Length, chunks, or up to the end
        of the connection."""
        deadline = time.monotonic() + timeout
        lines = self._until(b"\r\n\r\n", deadline).decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        response = Response(version, int(status), headers, b"")
        if head_only or response.status in (204, 304) or response.status < 200:
            return response
        if "content-length" in headers:
            response.body = self._exactly(int(headers["content-length"][0]), deadline)
        elif "chunked" in (response.header("transfer-encoding") or ""):
            while True:
                size = int(self._until(b"\r\n", deadline).split(b";")[0], 16)
                response.body += self._exactly(size, deadline)
                self._exactly(2, deadline)
                if size == 0:
                    break
        else:
            try:
                while True:
                    self._fill(deadline)
            except EOFError:
                response.body, self.pending = self.pending, b""
        return response

    def closed_within(self, seconds):
        """True when the sidecar ends the connection (end of stream or reset) within `seconds`
        and sent nothing more before."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    return self.pending == b""
                self.pending += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return self.pending == b""
        return False


def problem(response, status, code):
    assert response.status == status, response
    assert response.header("Content-Type") == "application/problem+json", response
    document = response.json()
    assert document["status"] == status and document["code"] == code, document
    assert document["type"] == "urn:iothub-sidecar:problem:" + code
    return document


def log_lines(sidecar, text):
    return [line for line in sidecar.output().splitlines() if text in line]


# ---------------------------------------------------------------- running out of file descriptors

def cpu_seconds(pid):
    """User plus system CPU time the process has used so far."""
    with open("/proc/{}/stat".format(pid)) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of proc(5); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_descriptors(pid):
    return len(os.listdir("/proc/{}/fd".format(pid)))


def healthz_on_a_new_connection(sidecar, timeout):
    """Whether a new connection gets an answer to GET /healthz within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = Connection(sidecar, timeout=2)
            try:
                connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
                if connection.response(timeout=2).status == 200:
                    return True
            finally:
                connection.close()
        except (OSError, EOFError):
            time.sleep(0.2)
    return False


EXHAUSTED = "no file descriptor is left"
RECOVERED = "accepting connections again"


def exhaust_descriptors(sidecar, count):
    """Opens `count` connections, more than the sidecar has descriptors for, and waits until it
    has said so."""
    warnings = len(log_lines(sidecar, EXHAUSTED))
    extra = [socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) for _ in range(count)]
    deadline = time.monotonic() + 10
    while len(log_lines(sidecar, EXHAUSTED)) == warnings and time.monotonic() < deadline:
        time.sleep(0.1)
    return extra


def test_running_out_of_descriptors_backs_off_keeps_serving_and_recovers():
    sidecar = Sidecar().wait_ready()
    pid = sidecar.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        open_before = Connection(sidecar)
        open_before.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        assert open_before.response().status == 200
        # Room for a few more connections only: the rest wait in the listen backlog, and every
        # accept the sidecar tries fails with EMFILE.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_descriptors(pid) + 8, hard))

        for episode in (1, 2):
            extra = exhaust_descriptors(sidecar, 40)
            time.sleep(0.5)
            started, cpu_before = time.monotonic(), cpu_seconds(pid)
            time.sleep(2)
            share = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
            # A bound against spinning on accept (which takes a whole core), not a speed test.
            assert share < 0.2, "the sidecar used {:.0%} of a core while out of descriptors".format(share)
            warnings = log_lines(sidecar, EXHAUSTED)
            assert len(warnings) == episode, sidecar.output()
            assert " warning " in warnings[-1], warnings[-1]

            # The connection opened before is still served.
            open_before.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
            assert open_before.response().status == 200

            for connection in extra:
                connection.close()
            assert healthz_on_a_new_connection(sidecar, timeout=10), sidecar.output()
            # The episode ends after a quiet second of accepting.
            deadline = time.monotonic() + 5
            while len(log_lines(sidecar, RECOVERED)) < episode and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(log_lines(sidecar, RECOVERED)) == episode, sidecar.output()
            assert len(log_lines(sidecar, EXHAUSTED)) == episode, sidecar.output()
        open_before.close()
    finally:
        if sidecar.process.poll() is None:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert sidecar.stop() == 0, sidecar.output()


# ---------------------------------------------------------------- request bodies that stop arriving

TIMED_OUT = "request body timed out"


@pytest.mark.parametrize("method, path", [("POST", "/messages"), ("PUT", "/blob/stalled.bin")])
def test_a_body_that_stops_arriving_gets_408_and_the_connection_ends(sidecar, method, path):
    logged = len(log_lines(sidecar, TIMED_OUT))
    connection = Connection(sidecar)
    started = time.monotonic()
    connection.send("{} {} HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 1000000\r\n\r\nx".format(method, path))
    response = connection.response(timeout=BODY_TIMEOUT + 10)
    waited = time.monotonic() - started
    document = problem(response, 408, "ValueError")
    assert "request body timed out after {} s without data".format(BODY_TIMEOUT) in document["detail"], document
    assert waited >= BODY_TIMEOUT - 0.5, waited  # not before the timeout
    assert response.header("Connection") == "close", response
    assert connection.closed_within(5)
    lines = log_lines(sidecar, TIMED_OUT)
    assert len(lines) == logged + 1 and " warning " in lines[-1], lines


def test_a_stalled_upload_is_aborted(sidecar):
    """The blob of the upload above was never stored, and the hub heard that it failed."""
    connection = Connection(sidecar)
    connection.send("PUT /blob/aborted.bin HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 1000000\r\n\r\n" + "y" * 1000)
    problem(connection.response(timeout=BODY_TIMEOUT + 10), 408, "ValueError")
    assert sidecar.hub("GET", "/local/blobs/fileuploads/" + quote("sidecar-device/aborted.bin")).status == 404
    notifications = sidecar.hub("GET", "/local/file-uploads").json()["notifications"]
    mine = [note for note in notifications if note["blobName"] == "sidecar-device/aborted.bin"]
    assert len(mine) == 1 and mine[0]["isSuccess"] is False, notifications


def test_a_slow_but_steady_body_is_not_cut_off(sidecar):
    body = b"steady!!"  # a byte every 0.5 s: 4 s in all, twice the timeout
    connection = Connection(sidecar)
    connection.send("POST /messages HTTP/1.1\r\nHost: sidecar\r\nContent-Length: {}\r\n\r\n".format(len(body)))
    for byte in body:
        time.sleep(0.5)
        connection.send(bytes([byte]))
    response = connection.response()
    assert response.status == 200 and "messageId" in response.json(), response
    connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    assert connection.response().status == 200


def test_a_request_without_a_body_may_stay_idle_longer_than_the_body_timeout(sidecar):
    connection = Connection(sidecar)
    connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    assert connection.response().status == 200
    time.sleep(BODY_TIMEOUT + 1)
    connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    assert connection.response().status == 200


# ---------------------------------------------------------------- HTTP/1.0 and Connection: close

def test_http_1_0_without_keep_alive_is_answered_then_closed(sidecar):
    connection = Connection(sidecar)
    connection.send("GET /healthz HTTP/1.0\r\n\r\n")
    response = connection.response()
    assert response.status == 200 and response.json() == {"status": "ok"}, response
    assert response.version == "HTTP/1.0", response
    assert connection.closed_within(5)


def test_http_1_0_with_keep_alive_stays_open(sidecar):
    connection = Connection(sidecar)
    for _ in range(2):
        connection.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = connection.response()
        assert response.status == 200 and response.header("Connection").lower() == "keep-alive", response
    connection.close()


def test_http_1_0_gets_no_chunked_body(sidecar):
    """A streamed answer (no length known) to an HTTP/1.0 client ends with the connection."""
    connection = Connection(sidecar)
    connection.send("GET /events HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = connection.response(head_only=True)
    assert response.status == 200 and response.version == "HTTP/1.0", response
    assert response.header("Transfer-Encoding") is None, response
    assert response.header("Connection").lower() == "close", response
    assert connection._until(b"\n\n", time.monotonic() + 5).startswith(b"event:")
    connection.close()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_http_1_1_connection_close_is_answered_then_closed(sidecar, value):
    connection = Connection(sidecar)
    connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: {}\r\n\r\n".format(value))
    response = connection.response()
    assert response.status == 200 and response.header("Connection") == "close", response
    assert connection.closed_within(5)


def test_http_1_1_keeps_the_connection_open(sidecar):
    connection = Connection(sidecar)
    for _ in range(2):
        connection.send("GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        assert connection.response().status == 200
    assert not connection.closed_within(0.5)
    connection.close()


# ---------------------------------------------------------------- malformed and ambiguous framing

HEAD = "POST /messages HTTP/1.1\r\nHost: sidecar\r\n"

MALFORMED = {
    "unknown transfer coding": HEAD + "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunk size overflows": HEAD + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
    "chunk size not hex": HEAD + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk without its line end": HEAD + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "negative length": HEAD + "Content-Length: -5\r\n\r\nhello",
    "length not a number": HEAD + "Content-Length: 5x\r\n\r\nhello",
    # Request smuggling: framings two servers could read differently.
    "length and chunked": HEAD + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two lengths that differ": HEAD + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "folded header": HEAD + "Content-Length: 5\r\niothub-app-x: a\r\n b\r\n\r\nhello",
    "folded transfer coding": HEAD + "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_framing_is_a_client_error_and_ends_the_connection(sidecar, name):
    connection = Connection(sidecar)
    connection.send(MALFORMED[name] + "GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    response = connection.response()
    problem(response, 400, "ValueError")
    assert response.header("Connection") == "close", response
    assert connection.closed_within(5)
    # The sidecar is still fine, and did not take it for its own failure.
    assert sidecar.get("/healthz").status == 200
    assert not [line for line in log_lines(sidecar, "request failed") if "path=/messages" in line]
