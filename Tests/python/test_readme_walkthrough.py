"""The README's walkthrough, run as printed (with `set -euo pipefail`) against the sidecar the
README's run command starts: `iothub-sidecar serve --local-hub` with every default (ports 8080,
8883, 8443, 10000 and the data directory under $HOME, here a fresh one)."""
import os
import re
import subprocess
import tempfile
import time

from sidecar_support import BINARY

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def walkthrough():
    with open(README) as file:
        text = file.read()
    block = re.search(r"<!-- walkthrough:begin -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S)
    assert block, "the README has no walkthrough block"
    return block.group(1)


def test_readme_walkthrough_runs_as_printed():
    home = tempfile.mkdtemp(prefix="walkthrough-home-")
    environment = {key: value for key, value in os.environ.items() if key not in ("XDG_DATA_HOME", "IOTHUB_DEVICE_CONNECTION_STRING")}
    environment.update(HOME=home, SIDECAR_BIN=os.path.abspath(BINARY))
    sidecar = subprocess.Popen([BINARY, "serve", "--local-hub"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while subprocess.run(["curl", "-sf", "http://127.0.0.1:8080/readyz"], capture_output=True).returncode != 0:
            assert sidecar.poll() is None, sidecar.stderr.read()
            assert time.time() < deadline, "the sidecar did not become ready"
            time.sleep(0.2)
        run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + walkthrough()], env=environment, capture_output=True, text=True,
                             timeout=300, cwd=os.path.join(os.path.dirname(README)))
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:]
        output = run.stdout
        assert '"state":"connected"' in output
        assert '"messageId":"' in output and '"results":[' in output
        assert "hello device" in output and "iothub-app-color: blue" in output
        assert '"version":' in output and '"telemetryInterval":10' in output
        assert '"methodName":"reboot"' in output and '"rebooting":true' in output
        assert '"blobName":"sidecar-device/report.csv"' in output
        assert "NoConnectionError" in output and "event: connection" in output
        assert "iothub_sidecar_messages_sent_total" in output and "openapi: 3.1.0" in output
        assert '"code":"ValueError"' in output
    finally:
        sidecar.terminate()
        sidecar.wait(30)
