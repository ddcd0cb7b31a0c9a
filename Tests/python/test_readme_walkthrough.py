"""The README's walkthrough, run as printed (with `set -euo pipefail`) against the sidecar the
README's run command starts: `iothub-sidecar serve --local-hub` with every default (ports 8080,
8883, 8443, 10000 and the data directory under $XDG_DATA_HOME, here a fresh one that is not
under $HOME), from a directory outside the repository. Sidecar and walkthrough run in a private
network namespace of their own, so that a sidecar already running on this machine
(`scripts/run`) on the same fixed ports neither collides with this one nor answers for it."""
import os
import re
import shutil
import subprocess

import pytest

from sidecar_support import BINARY

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")

# Inside the namespace: bring loopback up, start the sidecar, wait until it is ready, run the
# walkthrough in a subshell, stop the sidecar.
SCRIPT = """
ip link set lo up
"$SIDECAR_BIN" serve --local-hub > /dev/null 2> "$SIDECAR_LOG" &
sidecar=$!
for attempt in $(seq 300); do
  curl -sf http://127.0.0.1:8080/readyz > /dev/null && break
  kill -0 $sidecar 2> /dev/null || { echo "the sidecar exited" >&2; exit 97; }
  sleep 0.1
done
curl -sf http://127.0.0.1:8080/readyz > /dev/null || { echo "the sidecar did not become ready" >&2; exit 98; }
( set -euo pipefail
{walkthrough}
)
status=$?
kill -TERM $sidecar
wait $sidecar
exit $status
"""


def walkthrough():
    with open(README) as file:
        text = file.read()
    block = re.search(r"<!-- walkthrough:begin -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S)
    assert block, "the README has no walkthrough block"
    return block.group(1)


def in_private_network(command):
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("this test needs unshare and ip (util-linux, iproute2): scripts/setup installs them")
    return (["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]) + command


def test_readme_walkthrough_runs_as_printed(tmp_path):
    home, data, elsewhere = tmp_path / "home", tmp_path / "xdg-data", tmp_path / "elsewhere"
    for directory in (home, data, elsewhere):
        directory.mkdir()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IOTHUB_")}
    environment.update(HOME=str(home), XDG_DATA_HOME=str(data), SIDECAR_BIN=os.path.abspath(BINARY),
                       SIDECAR_LOG=str(tmp_path / "sidecar.log"))
    script = SCRIPT.replace("{walkthrough}", walkthrough())
    run = subprocess.run(in_private_network(["bash", "-c", script]), env=environment, capture_output=True, text=True,
                         timeout=300, cwd=str(elsewhere))
    log = (tmp_path / "sidecar.log").read_text(errors="replace")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:] + log[-3000:]
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
    # The local hub's data went where XDG_DATA_HOME says, not under $HOME.
    assert (data / "iothub-sidecar" / "localhub" / "ca.pem").exists()
    assert not (home / ".local" / "share" / "iothub-sidecar").exists()
