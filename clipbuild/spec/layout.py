"""Disk arithmetic shared by profile validation and image assembly: what a partition table costs on disk."""

from __future__ import annotations

from clipbuild.core.sizes import MIB
from clipbuild.spec.model import Disk, Partition

ALIGNMENT = MIB
GPT_HEAD = MIB  # protective MBR + primary GPT, rounded to the first aligned partition start
GPT_TAIL = MIB  # backup GPT (33 sectors), rounded up
VERITY_BLOCK = 4096
VERITY_DIGEST = 32  # sha256


def align(size: int, to: int = ALIGNMENT) -> int:
    return -(-size // to) * to


def verity_hash_size(data_size: int, block: int = VERITY_BLOCK, digest: int = VERITY_DIGEST) -> int:
    """Bytes of a dm-verity hash device for `data_size` bytes of data (superblock + every tree level)."""
    per_block = block // digest
    blocks = -(-data_size // block)
    total = 1  # superblock, padded to one hash block
    while True:
        blocks = -(-blocks // per_block)
        total += blocks
        if blocks <= 1:
            return total * block


def partition_footprint(part: Partition) -> int:
    """Bytes a partition takes on disk with all its slots and verity hash partitions."""
    one = align(part.size)
    if part.verity:
        one += align(verity_hash_size(part.size))
    return one * max(1, len(part.slots))


def minimum_disk_size(disk: Disk) -> int:
    return GPT_HEAD + GPT_TAIL + sum(partition_footprint(p) for p in disk.partitions)
