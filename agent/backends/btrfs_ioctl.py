"""The btrfs ioctls the agent uses instead of a ``btrfs`` process: on a directory it holds by
descriptor, where a path would not do (a frozen project's home hidden under an empty mount
while it is deleted: the read-only flag, deleting a subvolume by its name in its parent), and
where a process per project would cost too much (the generations the reconciler reads of
every project each cycle; the read-only flag behind Freeze and ListProjects)."""

from __future__ import annotations

import fcntl
import struct
from dataclasses import dataclass

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


# struct btrfs_ioctl_get_subvol_info_args (uapi linux/btrfs.h, kernel >= 4.18): u64 treeid;
# char name[256]; u64 parent_id, dirid, generation, flags; u8 uuid[16], parent_uuid[16],
# received_uuid[16]; u64 ctransid, otransid, stransid, rtransid; four struct
# btrfs_ioctl_timespec {u64 sec; u32 nsec;} (16 bytes each with their padding); u64 reserved[8].
_SUBVOL_INFO = struct.Struct("=Q256sQQQQ16s16s16sQQQQ" + "QI4x" * 4 + "64x")
SUBVOL_INFO_SIZE = _SUBVOL_INFO.size  # 504
BTRFS_IOC_GET_SUBVOL_INFO = (2 << 30) | (SUBVOL_INFO_SIZE << 16) | (0x94 << 8) | 60
# struct btrfs_ioctl_fs_info_args: u64 max_id, num_devices; u8 fsid[16]; ... 1024 bytes in all.
_FS_INFO_SIZE = 1024
BTRFS_IOC_FS_INFO = (2 << 30) | (_FS_INFO_SIZE << 16) | (0x94 << 8) | 31
BTRFS_IOC_SUBVOL_CREATE = (1 << 30) | (_VOL_ARGS << 16) | (0x94 << 8) | 14
# A subvolume's root directory always has this inode number.
SUBVOLUME_ROOT_INODE = 256


@dataclass(frozen=True)
class SubvolumeInfo:
    """What BTRFS_IOC_GET_SUBVOL_INFO tells of a subvolume (the fields the agent reads)."""

    id: int
    parent_id: int
    generation: int
    """The root item's generation: the transaction that last committed a change to the subvolume."""
    flags: int
    otransid: int
    """The transaction that created the subvolume (for a snapshot: what it froze)."""


def parse_subvol_info(buffer: bytes) -> SubvolumeInfo:
    """Decode a struct btrfs_ioctl_get_subvol_info_args; ValueError when the size is wrong."""
    if len(buffer) != SUBVOL_INFO_SIZE:
        raise ValueError(f"subvolume info of {len(buffer)} bytes, expected {SUBVOL_INFO_SIZE}")
    fields = _SUBVOL_INFO.unpack(buffer)
    treeid, _name, parent_id, _dirid, generation, flags = fields[:6]
    otransid = fields[10]
    return SubvolumeInfo(id=treeid, parent_id=parent_id, generation=generation, flags=flags, otransid=otransid)


def subvol_info(fd: int) -> SubvolumeInfo:
    """The subvolume ``fd`` is open on (any directory inside it names the subvolume); needs no
    privilege. Raises OSError (ENOTTY off btrfs)."""
    buffer = bytearray(SUBVOL_INFO_SIZE)
    fcntl.ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, buffer, True)
    return parse_subvol_info(bytes(buffer))


def parse_fsid(buffer: bytes) -> bytes:
    """The filesystem uuid in a struct btrfs_ioctl_fs_info_args."""
    if len(buffer) != _FS_INFO_SIZE:
        raise ValueError(f"filesystem info of {len(buffer)} bytes, expected {_FS_INFO_SIZE}")
    return bytes(buffer[16:32])


def fsid(fd: int) -> bytes:
    """The uuid of the btrfs filesystem ``fd`` is open on (every subvolume of it has the same)."""
    buffer = bytearray(_FS_INFO_SIZE)
    fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buffer, True)
    return parse_fsid(bytes(buffer))


def is_readonly(fd: int) -> bool:
    """Whether the subvolume whose root ``fd`` is open on is read-only."""
    flags = struct.unpack("Q", fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, struct.pack("Q", 0)))[0]
    return bool(flags & BTRFS_SUBVOL_RDONLY)


def create_subvolume(parent_fd: int, name: str) -> None:
    """Create the empty subvolume ``name`` in the directory ``parent_fd`` is open on."""
    fcntl.ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, bytearray(vol_args(name)), True)
