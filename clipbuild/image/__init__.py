"""Disk images: GPT, filesystems and verity, the bootloader, dpkg --root, A/B slots, the manifest,
publishing, inspection and QEMU."""
