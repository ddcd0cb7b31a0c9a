"""What can be checked of deploy/ on a machine without a container engine: the YAML files parse
and say what the sidecar expects (probe paths, listener, credential variables, options its
--help documents), the systemd unit passes `systemd-analyze verify`, and every Debian package
the Dockerfile installs exists."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

from sidecar_support import BINARY, free_port

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")


def read(name):
    with open(os.path.join(DEPLOY, name)) as file:
        return file.read()


def serve_help():
    return subprocess.run([BINARY, "serve", "--help"], capture_output=True, text=True, check=True).stdout


def test_kubernetes_pod():
    pod = yaml.safe_load(read("kubernetes.yaml"))
    assert pod["kind"] == "Pod"
    containers = {container["name"]: container for container in pod["spec"]["containers"]}
    sidecar = containers["iothub-sidecar"]
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["IOTHUB_SIDECAR_LISTEN"]["value"].startswith("127.0.0.1:")
    assert "secretKeyRef" in env["IOTHUB_DEVICE_CONNECTION_STRING"]["valueFrom"]
    assert "/readyz" in " ".join(sidecar["readinessProbe"]["exec"]["command"])
    assert "/healthz" in " ".join(sidecar["livenessProbe"]["exec"]["command"])
    assert sidecar["resources"]["limits"]["memory"] and sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert containers["app"]["env"][0]["value"] == "http://" + env["IOTHUB_SIDECAR_LISTEN"]["value"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_compose_file():
    compose = yaml.safe_load(read("compose.yaml"))
    sidecar, app = compose["services"]["sidecar"], compose["services"]["app"]
    assert app["network_mode"] == "service:sidecar"
    assert sidecar["environment"]["IOTHUB_SIDECAR_LISTEN"] == "127.0.0.1:8080"
    assert app["environment"]["SIDECAR_URL"] == "http://127.0.0.1:8080"
    assert "/healthz" in " ".join(sidecar["healthcheck"]["test"])
    secret_path = "/run/secrets/device-connection-string"
    assert sidecar["command"] == ["serve", "--connection-string-file", secret_path]
    assert os.path.exists(os.path.join(DEPLOY, "..", "examples", "device_app.py"))


def test_options_used_in_deploy_files_exist():
    text = serve_help()
    used = list(yaml.safe_load(read("compose.yaml"))["services"]["sidecar"]["command"])
    used += [argument for container in yaml.safe_load(read("kubernetes.yaml"))["spec"]["containers"] for argument in container.get("args", [])]
    used += re.search(r"^ExecStart=(.*)$", read("iothub-sidecar.service"), re.M).group(1).split()
    for option in (argument for argument in used if argument.startswith("--")):
        assert option in text, option
    for name in ("compose.yaml", "kubernetes.yaml", "iothub-sidecar.service", "Dockerfile"):
        for variable in set(re.findall(r"IOTHUB_[A-Z_]+", read(name))):
            assert variable in text, (name, variable)


def test_systemd_unit_verifies():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    directory = tempfile.mkdtemp()
    unit = read("iothub-sidecar.service").replace("/usr/local/bin/iothub-sidecar", os.path.abspath(BINARY))
    path = os.path.join(directory, "iothub-sidecar.service")
    with open(path, "w") as file:
        file.write(unit)
    run = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "iothub-sidecar.service" not in run.stderr, run.stderr


def test_dockerfile_packages_exist_in_debian():
    dockerfile = read("Dockerfile")
    packages = set()
    for line in re.findall(r"apt-get install -y --no-install-recommends ([^\\\n&]+)", dockerfile):
        packages.update(line.split())
    assert {"libmosquitto1", "libcurl4", "libssl3", "ca-certificates"} <= packages
    for package in sorted(packages):
        run = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True)
        assert run.returncode == 0 and "Package: " + package in run.stdout, package
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def test_the_image_settings_start_the_sidecar():
    """The image listens on 0.0.0.0 without an API token: its environment must allow that, or
    the container stops at once (run here with a free port instead of 8080)."""
    env = {}
    for line in re.findall(r"^ENV (.*)$", read("Dockerfile"), re.M):
        env.update(pair.split("=", 1) for pair in line.split())
    assert env["IOTHUB_SIDECAR_LISTEN"].startswith("0.0.0.0:")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IOTHUB_")}
    environment.update(env)
    environment["IOTHUB_SIDECAR_LISTEN"] = "0.0.0.0:{}".format(free_port())
    data_dir = tempfile.mkdtemp(prefix="sidecar-image-")
    ports = [str(free_port()) for _ in range(3)]
    process = subprocess.Popen(
        [BINARY, "serve", "--local-hub", "--local-hub-data-dir", data_dir, "--local-hub-mqtt-port", ports[0],
         "--local-hub-https-port", ports[1], "--local-hub-blob-port", ports[2]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(3)
    finally:
        process.kill()
        _, stderr = process.communicate()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert b"can be reached from other machines" not in stderr, stderr
