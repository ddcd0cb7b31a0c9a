#!/usr/bin/python3
"""Runs a command under the system-call filters a systemd unit would give it, without systemd:

    /usr/bin/python3 seccomp_replay.py UNIT-FILE -- COMMAND [ARGUMENT…]

It reads the unit's `SystemCallFilter=` lines with systemd's rules (the first line decides
between allow-list and deny-list; an allow-list always holds @default; a `~` line removes, a
plain line adds), expands the `@groups` with `systemd-analyze syscall-filter` of the systemd
installed here, and installs the result with libseccomp (Debian's python3-seccomp) before
`exec`: a system call outside the list kills the process with SIGSYS, as systemd's default
action does when `SystemCallErrorNumber=` is not set. `MemoryDenyWriteExecute=yes` and
`RestrictAddressFamilies=` are replayed too, as the errors systemd's own filters return.

`--print` writes the allowed system calls, one a line, instead of running anything.
Needs /usr/bin/python3 (python3-seccomp is a Debian package, not in the test venv)."""
import errno
import mmap
import os
import re
import socket
import subprocess
import sys

import seccomp


def expand(name, cache={}):
    """The system calls of a name: itself, or a group's members (groups nest)."""
    if not name.startswith("@"):
        return {name}
    if name not in cache:
        output = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
        members = set()
        for line in output.splitlines():
            word = line.strip()
            if not word or word == name or word.startswith("#"):
                continue
            members |= expand(word)
        cache[name] = members
    return cache[name]


def settings(unit_text):
    """The unit's [Service] assignments, in order, as (key, value) pairs."""
    pairs = []
    for line in unit_text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    return pairs


def allowed_syscalls(unit_text):
    """The effective allow-list of the unit's SystemCallFilter= lines (None: no filter)."""
    allowed = None
    for key, value in settings(unit_text):
        if key != "SystemCallFilter":
            continue
        if value == "":
            allowed = None
            continue
        invert = value.startswith("~")
        names = set()
        for word in value.lstrip("~").split():
            names |= expand(word.split(":")[0])
        if allowed is None:
            if invert:
                raise SystemExit("seccomp_replay: a unit that starts with a deny-list is not replayed here")
            allowed = expand("@default") | names
        elif invert:
            allowed -= names
        else:
            allowed |= names
    return allowed


def value_of(unit_text, key):
    found = None
    for name, value in settings(unit_text):
        if name == key:
            found = value
    return found


def install(unit_text):
    # Permissive filters first: once the allow-list is in, installing more would need seccomp().
    if value_of(unit_text, "MemoryDenyWriteExecute") == "yes":
        guard = seccomp.SyscallFilter(seccomp.ALLOW)
        both = mmap.PROT_WRITE | mmap.PROT_EXEC
        guard.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
        guard.add_rule(seccomp.ERRNO(errno.EPERM), "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
        guard.add_rule(seccomp.ERRNO(errno.EPERM), "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
        guard.load()
    families = value_of(unit_text, "RestrictAddressFamilies")
    if families:
        allowed = {getattr(socket, name) for name in families.split()}
        guard = seccomp.SyscallFilter(seccomp.ALLOW)
        for family in range(0, 64):
            if family not in allowed:
                guard.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
        guard.load()
    allowed = allowed_syscalls(unit_text)
    if allowed is not None:
        syscall_filter = seccomp.SyscallFilter(seccomp.KILL_PROCESS)
        for name in sorted(allowed):
            try:
                syscall_filter.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError, OSError):
                pass  # not a system call of this architecture
        syscall_filter.load()


def main():
    arguments = sys.argv[1:]
    if len(arguments) >= 2 and arguments[1] == "--print":
        with open(arguments[0]) as file:
            print("\n".join(sorted(allowed_syscalls(file.read()) or [])))
        return
    if len(arguments) < 3 or arguments[1] != "--":
        raise SystemExit(__doc__)
    with open(arguments[0]) as file:
        unit_text = file.read()
    command = arguments[2:]
    install(unit_text)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
