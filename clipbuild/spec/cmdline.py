"""Kernel arguments a profile may add to the command line (docs/profiles.md, "boot.cmdline").

clipbuild writes the arguments that make the boot trustworthy: the dm-verity table (`dm-mod.create`,
`dm-mod.waitfor`), `root=/dev/dm-0`, `rootfstype`, `ro` and `clip.slot`. A profile's arguments follow them,
and the kernel keeps the last value of most arguments, so one argument could undo them; an argument the kernel
does not know is handed to init (as an argument or a variable), where it can change how the system starts.

The rule is an allowlist: an argument is accepted only when its name is in ALLOWED, with one of the values
listed there (the values that keep a protection on). Before it, two denylists say why the most dangerous ones
are refused: RESERVED (what clipbuild sets or what chooses the code that runs first) and WEAKENING (arguments
that turn a protection off). The kernel treats `-` and `_` in names alike, so names are compared with `_`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAFE_CHARACTERS = re.compile(r"[!#-~]+")  # printable ASCII without space and '"'

def _by_name(reasons: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {name: reason for reason, names in reasons.items() for name in names}


# What clipbuild sets, and what chooses the code that runs first. Names ending with '.' are prefixes.
RESERVED = _by_name({
    "the verified root": ("root", "rootfstype", "rootflags", "rootwait", "rootdelay", "nfsroot"),
    "the read-only root": ("ro", "rw"),
    "the dm-verity table": ("dm_mod.", "dm_init.", "dm_verity.", "systemd.verity"),
    "the slot booted": ("clip.",),
    "the program run first": ("init", "rdinit"),
    "the boot files (SYSLINUX loads the initrd named here)": ("initrd", "BOOT_IMAGE"),
    "the entry of the previous version": ("oldclip",),
})

# Arguments that turn a protection off, refused with their reason (every other unknown one is refused too).
WEAKENING = _by_name({
    "turns address space randomisation off": ("nokaslr", "norandmaps"),
    "turns a CPU protection off": ("nopti", "nosmap", "nosmep", "noexec", "nx"),
    "selects the security modules": ("selinux", "apparmor", "security", "lsm", "enforcing", "ima_appraise"),
    "asks init for a root shell": ("single", "emergency", "rescue", "s", "S", "1", "systemd.debug_shell"),
    "chooses what init starts": ("systemd.unit",),
    "asks the initramfs for a shell": ("rd.break", "rd.shell", "break"),
    "opens a kernel debugger": ("kgdboc", "kgdbwait", "kgdbdbgp"),
    "lets user space map device memory": ("iomem",),
})


@dataclass(frozen=True)
class Allowed:
    """How an allowed argument may be written: bare (`flag`), or `name=VALUE` with VALUE in `values` or
    matching `pattern`."""

    values: tuple[str, ...] = ()
    pattern: str = ""
    flag: bool = False

    def describe(self) -> str:
        forms = (["no value"] if self.flag else []) + [f"={v}" for v in self.values]
        return ", ".join(forms) or f"a value matching {self.pattern}"

    def accepts(self, value: str | None) -> bool:
        if value is None:
            return self.flag
        return value in self.values or bool(self.pattern and re.fullmatch(self.pattern, value))


NUMBER = r"-?[0-9]{1,9}"
ALLOWED = {
    "console": Allowed(pattern=r"[A-Za-z0-9_,.:/-]+"), "earlycon": Allowed(pattern=r"[A-Za-z0-9_,.:/-]+"),
    "quiet": Allowed(flag=True), "loglevel": Allowed(pattern=r"[0-7]"), "panic": Allowed(pattern=NUMBER),
    "consoleblank": Allowed(pattern=r"[0-9]{1,9}"), "printk.devkmsg": Allowed(("off", "ratelimit")),
    "oops": Allowed(("panic",)), "slab_nomerge": Allowed(flag=True), "init_on_alloc": Allowed(("1",)),
    "init_on_free": Allowed(("1",)), "page_alloc.shuffle": Allowed(("1",)), "pti": Allowed(("on",)),
    "randomize_kstack_offset": Allowed(("on",)), "vsyscall": Allowed(("none",)), "debugfs": Allowed(("off",)),
    "module.sig_enforce": Allowed(("1",)), "lockdown": Allowed(("integrity", "confidentiality")),
    "mitigations": Allowed(("auto", "auto,nosmt")), "nosmt": Allowed(("force",), flag=True),
    "spectre_v2": Allowed(("on", "auto")), "spec_store_bypass_disable": Allowed(("on", "auto", "seccomp")),
    "l1tf": Allowed(("full", "full,force", "flush")), "mds": Allowed(("full", "full,nosmt")),
    "tsx": Allowed(("off",)), "tsx_async_abort": Allowed(("full", "full,nosmt")),
    "iommu": Allowed(("force",)), "intel_iommu": Allowed(("on",)), "amd_iommu": Allowed(("force_isolation",)),
    "iommu.strict": Allowed(("1",)), "iommu.passthrough": Allowed(("0",)),
    "efi": Allowed(("disable_early_pci_dma",)), "hardened_usercopy": Allowed(("on",)),
    "ia32_emulation": Allowed(("0",)), "kfence.sample_interval": Allowed(pattern=r"[0-9]{1,9}"),
    "random.trust_cpu": Allowed(("off",)), "random.trust_bootloader": Allowed(("off",)),
    "loadpin.enforce": Allowed(("1",)),
}


def refusal(argument: str) -> str | None:
    """Why a profile may not add `argument` to the kernel command line, or None when it may."""
    if not SAFE_CHARACTERS.fullmatch(argument):
        return (f"'{argument}': a kernel argument is printable ASCII without spaces or quotes (a quote would "
                "join it to the arguments after it)")
    if argument == "--":
        return "'--' ends the kernel's arguments: everything after it would go to init"
    name, eq, value = argument.partition("=")
    key = name.replace("-", "_")
    if what := _reserved(key):
        return f"'{argument}' overrides what clipbuild sets: {what}"
    if key in WEAKENING:
        return f"'{argument}' {WEAKENING[key]}"
    allowed = ALLOWED.get(key)
    if allowed is None:
        return f"'{argument}' is not among the kernel arguments clipbuild accepts"
    if not allowed.accepts(value if eq else None):
        return f"'{argument}': {name} is accepted only with {allowed.describe()} (the others weaken the image)"
    return None


def _reserved(key: str) -> str | None:
    for reserved, what in RESERVED.items():
        if key == reserved or (reserved.endswith(".") and key.startswith(reserved)):
            return what
    return "dm-verity" if "verity" in key.lower() else None
