"""Scripts run inside the build root by its own Python, mounted there by the build (they import nothing from
clipbuild, and clipbuild's tests import them)."""

from pathlib import Path

KCONFIG = Path(__file__).with_name("kconfig.py")
PKGINFO_HELPER = Path(__file__).with_name("pkginfo_helper.py")
