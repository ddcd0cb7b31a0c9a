"""Schemathesis generates requests from openapi/sidecar.yaml (valid and invalid ones) and sends
them to a live sidecar connected to its local hub: every answer must have a documented status,
media type, headers and schema, no answer may be a 500, invalid requests must be refused and
the API token must be enforced."""
import os
import subprocess
import sys

from sidecar_support import Sidecar

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "..", "..", "openapi", "sidecar.yaml")
TOKEN = "schemathesis-token"


def test_schemathesis_finds_nothing(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    sidecar = Sidecar(extra_args=["--api-token-file", str(token_file)])
    try:
        # /readyz needs no token, so the usual readiness wait works.
        sidecar.wait_ready()
        environment = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks", PYTHONPATH=HERE)
        run = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", SPEC,
             "--url", "http://" + sidecar.listen, "-H", "Authorization: Bearer " + TOKEN,
             "--checks", "all",
             # Schema-valid requests the hub itself refuses (a made-up upload correlation id,
             # an output name on a device identity) are documented 400s, not bugs.
             "--exclude-checks", "positive_data_acceptance",
             # An endless stream; tests/python/test_sidecar_api.py::test_events_stream covers it.
             "--exclude-path", "/events",
             "--max-examples", "30", "--request-timeout", "20", "--generation-deterministic"],
            cwd=str(tmp_path), env=environment, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    finally:
        sidecar.stop()
