"""How an application user reaches the sidecar's unix socket: systemd socket activation (the
listening socket arrives as descriptor 3 with LISTEN_FDS and LISTEN_PID, here passed by a
shell that sets LISTEN_PID to its own pid and execs the sidecar, as systemd does), and
--listen-mode/--listen-group for a socket the sidecar binds itself."""
import os
import socket
import stat
import subprocess

from sidecar_support import BINARY, Sidecar, UnixHTTPConnection

# Moves descriptor $FD to 3 (unless it is 3), then becomes the sidecar with LISTEN_PID naming itself.
ACTIVATE = '[ "$FD" = 3 ] || { exec 3<&"$FD"; exec {FD}<&-; }; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"'


def listening_unix_socket(path, mode=0o660):
    """The socket as systemd's socket unit makes it: bound, mode set, listening."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, mode)
    server.listen(16)
    return server


def test_the_sidecar_serves_on_the_socket_systemd_passes(tmp_path):
    path = str(tmp_path / "api.sock")
    server = listening_unix_socket(path)
    before = os.stat(path)
    # --listen names another place: the passed socket wins, and nothing is bound there.
    elsewhere = str(tmp_path / "not-used.sock")
    sidecar = Sidecar(listen="unix:" + elsewhere, wrapper=["bash", "-c", ACTIVATE], env={"FD": str(server.fileno())},
                      pass_fds=(server.fileno(),))
    server.close()  # only the sidecar holds it now
    sidecar.listen = "unix:" + path
    try:
        sidecar.wait_ready()
        assert sidecar.get("/status").json()["state"] == "connected"
        after = os.stat(path)
        # The same socket file, with systemd's mode: the sidecar did not bind a new one.
        assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o660)
        assert not os.path.exists(elsewhere)
        assert "unix:" + path in sidecar.output()
        # An idle keep-alive connection does not hold up a graceful stop.
        idle = UnixHTTPConnection(path)
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() is not None
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_the_variables_of_another_process_are_ignored(tmp_path):
    """LISTEN_PID names the process the sockets are for; a sidecar that inherits the variables
    from a parent they were meant for binds its own --listen."""
    path = str(tmp_path / "own.sock")
    sidecar = Sidecar(listen="unix:" + path, env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    try:
        sidecar.wait_ready()
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        sidecar.stop()


def test_a_passed_descriptor_that_is_not_a_listening_socket_is_refused(tmp_path):
    with open(tmp_path / "file", "w") as file:
        run = subprocess.run(["bash", "-c", ACTIVATE, BINARY, "serve", "--local-hub", "--local-hub-data-dir", str(tmp_path / "hub")],
                             env=dict(os.environ, FD=str(file.fileno())), pass_fds=(file.fileno(),), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "descriptor 3, passed by systemd (LISTEN_FDS), is not a listening stream socket" in run.stderr, run.stderr


def test_listen_mode_and_group_set_the_socket_the_sidecar_binds(tmp_path):
    path = str(tmp_path / "api.sock")
    # Root may give it any group; another user one of its own.
    group = 4242 if os.geteuid() == 0 else (os.getgroups() or [os.getgid()])[-1]
    sidecar = Sidecar(listen="unix:" + path, env={"IOTHUB_SIDECAR_LISTEN_MODE": "0660"}, extra_args=["--listen-group", str(group)])
    try:
        sidecar.wait_ready()
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == group
    finally:
        sidecar.stop()


def test_listen_mode_is_checked():
    for arguments, message in [
        (["--listen", "unix:/tmp/x.sock", "--listen-mode", "0999"], "--listen-mode must be permission bits in octal"),
        (["--listen", "127.0.0.1:0", "--listen-mode", "0660"], "apply to a unix socket"),
        (["--listen", "unix:/tmp/x.sock", "--listen-group", "no-such-group-here"], "there is no group 'no-such-group-here'"),
    ]:
        run = subprocess.run([BINARY, "serve", "--local-hub"] + arguments, capture_output=True, text=True, timeout=30)
        assert run.returncode == 1 and message in run.stderr, (arguments, run.stderr)
