"""What can be checked of deploy/ on a machine without a container engine, Kubernetes or a
running systemd: the YAML files parse and say what the sidecar expects (probe paths, listener,
state volume, credential variables, options its --help documents); the systemd units pass
`systemd-analyze verify` and `systemd-analyze security --offline`, and the service's system-call
filter is replayed with libseccomp around the real binary; the Dockerfile's build stage is
replayed in a clean directory (its COPY set always; its RUN commands, a full release build, when
IOTHUB_SIDECAR_DOCKERFILE_REPLAY=1); every Debian package the Dockerfile installs exists."""
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import yaml

from sidecar_support import BINARY, UnixHTTPConnection, free_port

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")
REPOSITORY = os.path.abspath(os.path.join(DEPLOY, ".."))
SECCOMP_REPLAY = os.path.join(os.path.dirname(__file__), "seccomp_replay.py")


def read(name):
    with open(os.path.join(DEPLOY, name)) as file:
        return file.read()


def serve_help():
    return subprocess.run([BINARY, "serve", "--help"], capture_output=True, text=True, check=True).stdout


def local_hub_arguments(data_dir):
    return ["--local-hub", "--local-hub-data-dir", data_dir, "--local-hub-mqtt-port", str(free_port()),
            "--local-hub-https-port", str(free_port()), "--local-hub-blob-port", str(free_port())]


def test_kubernetes_pod():
    pod = yaml.safe_load(read("kubernetes.yaml"))
    assert pod["kind"] == "Pod"
    # A native sidecar (Kubernetes 1.29+): an init container that keeps running, so the app
    # starts after the sidecar's startup probe passed.
    init = {container["name"]: container for container in pod["spec"]["initContainers"]}
    containers = {container["name"]: container for container in pod["spec"]["containers"]}
    sidecar = init["iothub-sidecar"]
    assert sidecar["restartPolicy"] == "Always"
    assert "iothub-sidecar" not in containers
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["IOTHUB_SIDECAR_LISTEN"]["value"].startswith("127.0.0.1:")
    assert "secretKeyRef" in env["IOTHUB_DEVICE_CONNECTION_STRING"]["valueFrom"]
    assert "/readyz" in " ".join(sidecar["startupProbe"]["exec"]["command"])
    assert "/readyz" in " ".join(sidecar["readinessProbe"]["exec"]["command"])
    assert "/healthz" in " ".join(sidecar["livenessProbe"]["exec"]["command"])
    assert sidecar["resources"]["limits"]["memory"] and sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert containers["app"]["env"][0]["value"] == "http://" + env["IOTHUB_SIDECAR_LISTEN"]["value"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The state directory is a volume (the root file system is read-only).
    state = env["IOTHUB_SIDECAR_STATE_DIR"]["value"]
    mounts = {mount["mountPath"]: mount["name"] for mount in sidecar["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert state in mounts and "emptyDir" in volumes[mounts[state]]


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
    # The state directory is a named volume; the secret file's owner is the sidecar's user,
    # as the file's comment says how to make it.
    state = sidecar["environment"]["IOTHUB_SIDECAR_STATE_DIR"]
    assert "sidecar-state:" + state in sidecar["volumes"] and "sidecar-state" in compose["volumes"]
    assert sidecar["user"].split(":")[0] == "10001"
    assert "install -m 0400 -o 10001" in read("compose.yaml")
    with open(os.path.join(REPOSITORY, ".gitignore")) as file:
        assert "deploy/device-connection-string" in file.read().split()


def test_options_used_in_deploy_files_exist():
    text = serve_help()
    used = list(yaml.safe_load(read("compose.yaml"))["services"]["sidecar"]["command"])
    pod = yaml.safe_load(read("kubernetes.yaml"))["spec"]
    used += [argument for container in pod["containers"] + pod["initContainers"] for argument in container.get("args", [])]
    used += re.search(r"^ExecStart=(.*)$", read("iothub-sidecar.service"), re.M).group(1).split()
    for option in (argument for argument in used if argument.startswith("--")):
        assert option in text, option
    for name in ("compose.yaml", "kubernetes.yaml", "iothub-sidecar.service", "iothub-sidecar.socket", "Dockerfile"):
        for variable in set(re.findall(r"IOTHUB_[A-Z_]+", read(name))):
            assert variable in text, (name, variable)


def installed_units(directory):
    """The two units, with the binary's path replaced by the one under test."""
    for name in ("iothub-sidecar.service", "iothub-sidecar.socket"):
        with open(os.path.join(directory, name), "w") as file:
            file.write(read(name).replace("/usr/local/bin/iothub-sidecar", os.path.abspath(BINARY)))
    return os.path.join(directory, "iothub-sidecar.service")


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (scripts/setup installs systemd)")
    installed_units(str(tmp_path))
    run = subprocess.run(["systemd-analyze", "verify", "iothub-sidecar.service", "iothub-sidecar.socket"],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "iothub-sidecar" not in run.stderr, run.stderr


def test_systemd_security_review_rates_the_service_ok(tmp_path):
    installed_units(str(tmp_path))
    run = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", "iothub-sidecar.service"],
                         capture_output=True, text=True, cwd=str(tmp_path))
    exposure = re.search(r"Overall exposure level for iothub-sidecar.service: ([0-9.]+) (\w+)", run.stdout)
    assert exposure, run.stdout[-2000:] + run.stderr
    assert float(exposure.group(1)) <= 2.0 and exposure.group(2) == "OK", exposure.group(0)


def seccomp_replay(unit_path, command, **kwargs):
    """Runs `command` under the unit's system-call filter (Debian's python3-seccomp)."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail("the seccomp replay needs Debian's python3-seccomp (scripts/setup installs it)")
    return ["/usr/bin/python3", SECCOMP_REPLAY, unit_path, "--"] + command


def test_the_units_system_call_filter_lets_the_sidecar_run(tmp_path):
    """The unit's effective filter (SystemCallFilter=, MemoryDenyWriteExecute=,
    RestrictAddressFamilies=) around --help and a sidecar that serves a request on a unix
    socket as the unit's does, connects to its local hub, and stops on SIGTERM."""
    unit = installed_units(str(tmp_path))
    run = subprocess.run(seccomp_replay(unit, [BINARY, "--help"]), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert "serve" in run.stdout
    socket_path = str(tmp_path / "api.sock")
    process = subprocess.Popen(
        seccomp_replay(unit, [BINARY, "serve", "--listen", "unix:" + socket_path, "--state-dir", str(tmp_path / "state")]
                       + local_hub_arguments(str(tmp_path / "hub"))),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        status = None
        while time.time() < deadline and status != 200:
            assert process.poll() is None, "the sidecar died under the filter ({}): {}".format(process.returncode, process.stderr.read())
            try:
                connection = UnixHTTPConnection(socket_path, timeout=5)
                connection.request("GET", "/readyz")
                status = connection.getresponse().status
                connection.close()
            except OSError:
                time.sleep(0.2)
        assert status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_replay_kills_what_the_old_filter_killed(tmp_path):
    """The replay bites: with the filter the unit had before (`~@privileged @resources`), the
    sidecar is killed with SIGSYS at start (libdispatch's threads call setpriority)."""
    unit = tmp_path / "old.service"
    unit.write_text(read("iothub-sidecar.service").replace("SystemCallFilter=~@privileged\n", "SystemCallFilter=~@privileged @resources\n"))
    assert "~@privileged @resources" in unit.read_text()
    run = subprocess.run(
        seccomp_replay(str(unit), [BINARY, "serve", "--listen", "unix:" + str(tmp_path / "api.sock"), "--state-dir", str(tmp_path / "state")]
                       + local_hub_arguments(str(tmp_path / "hub"))),
        capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGSYS, (run.returncode, run.stderr[-2000:])


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
    # The image's state directory, here a temporary one.
    assert env["IOTHUB_SIDECAR_STATE_DIR"] == "/var/lib/iothub-sidecar"
    assert "VOLUME /var/lib/iothub-sidecar" in read("Dockerfile")
    environment["IOTHUB_SIDECAR_STATE_DIR"] = os.path.join(data_dir, "state")
    process = subprocess.Popen(
        [BINARY, "serve"] + local_hub_arguments(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(3)
    finally:
        process.kill()
        _, stderr = process.communicate()
        state_made = os.path.isdir(os.path.join(data_dir, "state", "outbox"))
        shutil.rmtree(data_dir, ignore_errors=True)
    assert b"can be reached from other machines" not in stderr, stderr
    assert state_made, stderr


def dockerfile_build_stage():
    """The build stage's instructions, as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    instructions, in_build = [], False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            if in_build:
                break
            in_build = arguments.strip().lower().endswith(" as build")
            continue
        if in_build:
            instructions.append((instruction.upper(), " ".join(arguments.split())))
    assert instructions, "the Dockerfile has no build stage"
    return instructions


def build_context_files():
    """What `docker build .` sends from a clean clone: the files git tracks, minus .dockerignore."""
    with open(os.path.join(REPOSITORY, ".dockerignore")) as file:
        patterns = [line.strip().rstrip("/") for line in file if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.split("\0")

    def ignored(path):
        parts = path.split("/")
        for pattern in patterns:
            bare = pattern.replace("**/", "")
            if any(fnmatch.fnmatch("/".join(parts[:index]), pattern) for index in range(1, len(parts) + 1)):
                return True
            if any(fnmatch.fnmatch(part, bare) for part in parts):
                return True
        return False

    return [path for path in tracked if path and not ignored(path)]


def replay_copies(instructions, root, workdir="/"):
    """Copies what the stage's COPY instructions copy from the context into `root` (the image's
    file system); returns the directory the RUN commands run in."""
    context = build_context_files()
    for instruction, arguments in instructions:
        if instruction == "WORKDIR":
            workdir = arguments
            os.makedirs(root + workdir, exist_ok=True)
        elif instruction == "COPY":
            *sources, destination = arguments.split()
            assert not any(source.startswith("--") for source in sources), arguments
            target = os.path.normpath(os.path.join(root + workdir, destination))
            for source in sources:
                matched = [path for path in context if path == source or path.startswith(source.rstrip("/") + "/")]
                assert matched, "COPY {}: not in the build context".format(source)
                for path in matched:
                    if path == source:  # a file: into the directory, or to the name given
                        into = os.path.join(target, os.path.basename(path)) if destination.endswith("/") else target
                    else:  # a directory: its contents
                        into = os.path.join(target, os.path.relpath(path, source))
                    os.makedirs(os.path.dirname(into), exist_ok=True)
                    shutil.copy2(os.path.join(REPOSITORY, path), into, follow_symlinks=False)
    return root + workdir


def test_dockerignore_keeps_build_outputs_and_secrets_out():
    with open(os.path.join(REPOSITORY, ".dockerignore")) as file:
        patterns = file.read().split()
    for pattern in (".build/", ".build-*/", ".venv/", ".git", "deploy/device-connection-string"):
        assert pattern in patterns, pattern
    assert not any(path.startswith((".build", ".venv")) for path in build_context_files())


def test_the_build_stage_copies_a_package_swiftpm_can_load(tmp_path):
    """The COPY set in a clean directory is a package SwiftPM loads: every target's directory,
    the test targets' among them, is there. Without Tests/ (what the Dockerfile copied before)
    the same check fails the way `docker build` did."""
    instructions = dockerfile_build_stage()
    workdir = replay_copies(instructions, str(tmp_path / "image"))
    run = subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"name" : "iothub-sidecar"' in run.stdout or '"name": "iothub-sidecar"' in run.stdout
    without_tests = [(instruction, arguments) for instruction, arguments in instructions if not (instruction == "COPY" and arguments.startswith("Tests"))]
    broken = replay_copies(without_tests, str(tmp_path / "without-tests"))
    run = subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=broken, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "Tests/" in run.stderr, run.stderr[-3000:]


@pytest.mark.skipif(os.environ.get("IOTHUB_SIDECAR_DOCKERFILE_REPLAY") != "1",
                    reason="a full release build (IOTHUB_SIDECAR_DOCKERFILE_REPLAY=1 runs it)")
def test_the_build_stage_builds_a_stripped_binary(tmp_path):
    """The build stage's RUN commands, in order, in a clean copy of its COPY set, as root would
    run them in the swift image: apt-get is not run (its packages must already be installed
    here), `/out` is a temporary directory. The result is a stripped binary, the only file the
    run stage copies, that runs."""
    instructions = dockerfile_build_stage()
    workdir = replay_copies(instructions, str(tmp_path / "image"))
    out = str(tmp_path / "out")
    for instruction, arguments in instructions:
        if instruction != "RUN":
            continue
        if arguments.startswith("apt-get"):
            packages = re.search(r"--no-install-recommends ([^&]+)", arguments).group(1).split()
            for package in packages:
                state = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True).stdout
                assert "install ok installed" in state, package
            continue
        run = subprocess.run(["bash", "-euc", arguments.replace("/out", out)], cwd=workdir, capture_output=True, text=True, timeout=3600)
        assert run.returncode == 0, (arguments, run.stderr[-4000:])
    binary = os.path.join(out, "iothub-sidecar")
    sections = subprocess.run(["readelf", "-S", binary], capture_output=True, text=True, check=True).stdout
    assert ".symtab" not in sections, "the binary is not stripped"
    assert os.listdir(out) == ["iothub-sidecar"], "the image gets one file: " + repr(os.listdir(out))
    assert subprocess.run([binary, "--help"], capture_output=True).returncode == 0
    print("stripped binary: {} bytes".format(os.path.getsize(binary)))


def test_the_sidecar_links_no_foundation_and_no_icu():
    """The sidecar's modules import FoundationEssentials, never Foundation, which would bring
    CoreFoundation and ICU's 34 MB of data into the binary users deploy (docs/PERFORMANCE.md,
    "Footprint"). The debug build links the Swift libraries dynamically, so what it needs is what
    the code uses; LocalHub, a program of its own, may use Foundation."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", BINARY], capture_output=True, text=True, check=True).stdout)
    assert "libFoundationEssentials.so" in needed, needed
    assert not [library for library in needed if library.startswith(("libFoundation.so", "libFoundationInternationalization", "lib_FoundationICU"))], needed
