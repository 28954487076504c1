"""The two btrfs ioctls the agent needs on a directory it holds by descriptor, where a path
would not do (a frozen project's home hidden under an empty mount while it is deleted):
the read-only flag of a subvolume, and deleting a subvolume by its name in its parent."""

from __future__ import annotations

import fcntl
import struct

_VOL_ARGS = 4096  # struct btrfs_ioctl_vol_args: __s64 fd; char name[4088]
_NAME_MAX = _VOL_ARGS - 8 - 1
BTRFS_IOC_SNAP_DESTROY = (1 << 30) | (_VOL_ARGS << 16) | (0x94 << 8) | 15
BTRFS_IOC_SUBVOL_GETFLAGS = (2 << 30) | (8 << 16) | (0x94 << 8) | 25
BTRFS_IOC_SUBVOL_SETFLAGS = (1 << 30) | (8 << 16) | (0x94 << 8) | 26
BTRFS_SUBVOL_RDONLY = 1 << 1


def vol_args(name: str) -> bytes:
    """The ioctl argument naming ``name`` (one path component)."""
    encoded = name.encode()
    if not encoded or b"/" in encoded or len(encoded) > _NAME_MAX:
        raise ValueError(f"not a subvolume name: {name!r}")
    return struct.pack("q", 0) + encoded.ljust(_VOL_ARGS - 8, b"\0")


def set_readonly(fd: int, readonly: bool) -> None:
    """Set or clear the read-only flag of the subvolume whose root ``fd`` is open on."""
    flags = struct.unpack("Q", fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, struct.pack("Q", 0)))[0]
    flags = flags | BTRFS_SUBVOL_RDONLY if readonly else flags & ~BTRFS_SUBVOL_RDONLY
    fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, struct.pack("Q", flags))


def delete_subvolume(parent_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` in the directory ``parent_fd`` is open on."""
    # A mutable buffer: fcntl copies an immutable one only up to 1024 bytes.
    fcntl.ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, bytearray(vol_args(name)), True)
