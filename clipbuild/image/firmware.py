"""The UEFI machine an image of the UEFI path boots on under QEMU: OVMF's Secure Boot build with the species'
keys enrolled (a private copy of the variables per boot, so a boot never changes the next one's firmware
state), SMM on (OVMF's Secure Boot build needs it to protect its variables), and an emulated TPM 2.0 (swtpm)
whose PCRs the booted system reads for the measured-boot check.

The firmware refuses a loader or kernel image whose signature does not verify with db: it prints "Access
Denied" and then waits forever at its "Press any key" prompt, so whoever runs QEMU must watch for it and stop
the machine (vm.check does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import ToolError
from clipbuild.core.run import alive, spawn
from clipbuild.signing import secureboot

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
ACCESS_DENIED = "Access Denied"


@dataclass(frozen=True)
class Machine:
    """What a UEFI boot adds to QEMU's command line, ready once `vars_file` and `tpm_socket` exist."""

    vars_file: Path
    tpm_socket: Path | None

    def qemu_args(self) -> list[str]:
        args = ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_file}"]
        if self.tpm_socket is not None:
            args += ["-chardev", f"socket,id=chrtpm,path={self.tpm_socket}",
                     "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]
        return args


def disk_args(image: Path, fmt: str) -> list[str]:
    """The disk, first in the boot order: a boot option tried before it would add events to PCR 4."""
    return ["-drive", f"file={image},if=none,id=disk0,format={fmt},snapshot=on",
            "-device", "virtio-blk-pci,drive=disk0,bootindex=0"]


def start(keys: secureboot.SecureBootKeys, folder: Path, *, tpm: bool = True,
          lifetime: float | None = None) -> tuple[Machine, int | None]:
    """A fresh UEFI machine in `folder` (emptied first): enrolled variables, and swtpm listening when `tpm`:
    (the machine, swtpm's pid). swtpm ends when QEMU closes its socket, or after `lifetime` seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    vars_file = folder / "OVMF_VARS.fd"
    secureboot.enrolled_vars(keys, vars_file)
    if not tpm:
        return Machine(vars_file, None), None
    state = (folder / "tpm").absolute()  # swtpm changes to / : absolute paths only
    state.mkdir()
    socket = state / "sock"
    bounded = ["timeout", "--signal=TERM", "--kill-after=10", f"{int(lifetime)}s"] if lifetime else []
    pid = spawn([*bounded, "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                 "--ctrl", f"type=unixio,path={socket}", "--terminate"], folder / "swtpm.log")
    _wait_for(socket, pid, folder / "swtpm.log")
    return Machine(vars_file, socket), pid


@contextlib.contextmanager
def machine(keys: secureboot.SecureBootKeys, folder: Path, *, tpm: bool = True) -> Iterator[Machine]:
    """`start`, swtpm stopped on the way out."""
    started, pid = start(keys, folder, tpm=tpm)
    try:
        yield started
    finally:
        if pid is not None:
            stop(pid)


def _wait_for(socket: Path, pid: int, log: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not socket.exists():
        if _reaped(pid) or time.monotonic() > deadline:
            stop(pid)
            raise ToolError(f"swtpm did not start (its log: {log})", hint="is swtpm installed (apt-get install swtpm)?")
        time.sleep(0.05)


def _reaped(pid: int) -> bool:
    """Whether swtpm (our child) has exited, collecting its status."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return not alive(pid)


def stop(pid: int) -> None:
    """swtpm (and what runs it) stopped: TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for _ in range(40):
            if _reaped(pid):
                return
            time.sleep(0.05)
