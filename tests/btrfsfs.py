"""A real btrfs filesystem on a loop device, for tests that need one (root only).

:class:`LoopBtrfs` makes a sparse image file, attaches it to a free loop
device, formats it, mounts it and enables quotas; :meth:`LoopBtrfs.stop` undoes
all of that even when a process still holds something open on the mount, and
then checks that nothing is left. :func:`btrfs_unavailable_reason` says why
such tests must skip on this machine (or None when they can run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

_TOOLS = ("btrfs", "mkfs.btrfs", "losetup", "mount", "umount")
_COMMAND_TIMEOUT = 60.0


def _btrfs_registered() -> bool:
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["btrfs"] for line in text.splitlines())


def btrfs_unavailable_reason() -> str | None:
    """None when a loop-device btrfs can be made here; otherwise why not, for ``pytest.skip``.

    Needs root, ``btrfs``, ``mkfs.btrfs``, ``losetup``, ``mount`` and ``umount``
    on PATH, ``/dev/loop-control``, and btrfs in ``/proc/filesystems`` (tries
    ``modprobe btrfs`` once if it is not).
    """
    if os.geteuid() != 0:
        return "btrfs tests need root (loop devices and mount); running as uid %d" % os.geteuid()
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"btrfs tests need {', '.join(missing)} on PATH (btrfs-progs, util-linux)"
    if not Path("/dev/loop-control").exists():
        return "btrfs tests need loop devices: /dev/loop-control does not exist"
    if not _btrfs_registered():
        modprobe = shutil.which("modprobe")
        if modprobe is None:
            return "the kernel has no btrfs in /proc/filesystems and modprobe is not on PATH"
        try:
            done = subprocess.run(
                [modprobe, "btrfs"], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the kernel has no btrfs in /proc/filesystems and modprobe btrfs failed: {exc}"
        if done.returncode != 0 or not _btrfs_registered():
            return (
                "the kernel has no btrfs in /proc/filesystems and `modprobe btrfs` did not load it: "
                + (done.stderr.strip() or f"exit code {done.returncode}")
            )
    return None


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a setup/teardown command; RuntimeError with its stderr if it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def _unescape_mount_field(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as \ooo octal escapes.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and all(c in "01234567" for c in field[i + 1 : i + 4]) and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_at(mountpoint: Path) -> list[str]:
    """The sources of every mount on ``mountpoint`` (one per stacked mount), from /proc/self/mounts."""
    target = os.path.realpath(mountpoint)
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 2 and _unescape_mount_field(fields[1]) == target:
                found.append(_unescape_mount_field(fields[0]))
    return found


def leftover_loop_devices(image: Path) -> list[str]:
    """Loop devices (``/dev/loopN``) still backed by ``image``, even if the file was deleted.

    Reads ``/sys/block/loop*/loop/backing_file``, which the kernel suffixes
    with `` (deleted)`` once the file is gone.
    """
    wanted = os.path.realpath(image)
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        try:
            name = backing.read_text().rstrip("\n")
        except OSError:
            continue  # detached meanwhile
        if name.endswith(" (deleted)"):
            name = name[: -len(" (deleted)")]
        if name == wanted:
            found.append("/dev/" + backing.parent.parent.name)
    return found


def _pids_using(mountpoint: Path) -> list[int]:
    """Processes whose cwd, root, executable, open files or mappings lie under ``mountpoint``."""
    base = os.path.realpath(mountpoint)
    prefix = base.rstrip("/") + "/"

    def inside(target: str) -> bool:
        target = target.removesuffix(" (deleted)")
        return target == base or target.startswith(prefix)

    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        links = [entry / "cwd", entry / "root", entry / "exe"]
        try:
            links += list((entry / "fd").iterdir())
        except OSError:
            pass
        hit = False
        for link in links:
            try:
                if inside(os.readlink(link)):
                    hit = True
                    break
            except OSError:
                continue
        if not hit:
            try:
                with open(entry / "maps") as maps:
                    hit = any(inside(line.split(None, 5)[5].strip()) for line in maps if len(line.split(None, 5)) == 6)
            except OSError:
                pass
        if hit:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie holds nothing open any more


class LoopBtrfs:
    """A btrfs filesystem of ``size_mb`` MiB in ``workdir/btrfs.img``, mounted on ``workdir/mnt``.
    Subclasses make another filesystem (:meth:`_make_filesystem`) with the same life cycle.

    ``size_mb`` must be at least about 120 (mkfs.btrfs refuses smaller
    devices with its default DUP metadata). ``device`` is the loop device
    once started, ``""`` before and after.
    """

    KIND = "btrfs"

    def __init__(self, workdir: Path, size_mb: int = 1024) -> None:
        self.workdir = Path(workdir)
        self.size_mb = size_mb
        self.image = self.workdir / f"{self.KIND}.img"
        self.mountpoint = self.workdir / "mnt"
        self.device = ""

    # ------------------------------------------------------------ start

    def start(self) -> "LoopBtrfs":
        """Make, attach, format, mount and enable quotas; on any failure undo what was made and raise."""
        if self.device or mounts_at(self.mountpoint):
            raise RuntimeError(f"{self.mountpoint} is already in use")
        if self.image.exists():
            # Not made by this start(), so not ours to remove here: stop() does that.
            raise RuntimeError(f"{self.image} already exists (left by an earlier run? call stop())")
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.image, "xb") as image:
                image.truncate(self.size_mb * 1024 * 1024)  # sparse
            self.device = _run(["losetup", "--find", "--show", str(self.image)]).stdout.strip()
            if not self.device.startswith("/dev/"):
                raise RuntimeError(f"losetup --find --show printed {self.device!r}")
            self.mountpoint.mkdir(exist_ok=True)
            self._make_filesystem()
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - the start failure is the one to report
                pass
            raise
        return self

    def _make_filesystem(self) -> None:
        """Format ``device`` and mount it on ``mountpoint`` (which exists)."""
        _run(["mkfs.btrfs", "-q", self.device])
        # noatime, as project hosts mount it: with atime updates every read changes the
        # subvolume's generation, and the agent would count reads as changes.
        _run(["mount", "-t", "btrfs", "-o", "noatime", self.device, str(self.mountpoint)])
        _run(["btrfs", "quota", "enable", str(self.mountpoint)])

    # ------------------------------------------------------------ stop

    def stop(self) -> None:
        """Kill what uses the mount, unmount, detach, delete the image; then check nothing is left.

        Idempotent and safe on a half-made or already cleaned state. Raises
        AssertionError (after doing all it could) if the mount point is
        still mounted or a loop device still uses the image.
        """
        problems: list[str] = []
        if mounts_at(self.mountpoint):
            self._kill_users()
            self._unmount(problems)
        devices = set(leftover_loop_devices(self.image))
        if self.device:
            devices.add(self.device)
        for device in sorted(devices):
            self._detach(device, problems)
        self.device = ""
        try:
            self.image.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"cannot delete {self.image}: {exc}")
        try:
            self.mountpoint.rmdir()
        except OSError:
            pass  # missing, or something was left in it after a failed unmount

        remaining_mounts = mounts_at(self.mountpoint)
        remaining_devices = self._wait_detached()
        if remaining_mounts or remaining_devices:
            raise AssertionError(
                f"LoopBtrfs cleanup left mounts {remaining_mounts} on {self.mountpoint} and loop devices "
                f"{remaining_devices} on {self.image}; tried: {'; '.join(dict.fromkeys(problems)) or 'nothing failed'}"
            )

    def _kill_users(self, timeout: float = 10.0) -> None:
        pids = _pids_using(self.mountpoint)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _unmount(self, problems: list[str], attempts: int = 10) -> None:
        for attempt in range(attempts):
            if not mounts_at(self.mountpoint):
                return
            done = subprocess.run(
                ["umount", str(self.mountpoint)], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT
            )
            if done.returncode != 0:
                problems.append(f"umount: {done.stderr.strip()}")
                # a process may have started using it since the first sweep
                self._kill_users(timeout=2.0)
                time.sleep(0.1 * (attempt + 1))
        while mounts_at(self.mountpoint):
            done = subprocess.run(
                ["umount", "-l", str(self.mountpoint)], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT
            )
            problems.append(f"lazy umount: {done.stderr.strip() or 'done'}")
            if done.returncode != 0:
                return

    def _detach(self, device: str, problems: list[str]) -> None:
        done = subprocess.run(["losetup", "-d", device], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT)
        # "No such device or address": already detached; anything else is worth reporting.
        if done.returncode != 0 and "No such device" not in done.stderr:
            problems.append(f"losetup -d {device}: {done.stderr.strip()}")

    def _wait_detached(self, timeout: float = 5.0) -> list[str]:
        # After losetup -d the kernel releases the device when its last opener
        # (e.g. udev probing the new filesystem) closes it.
        deadline = time.monotonic() + timeout
        while True:
            remaining = leftover_loop_devices(self.image)
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.05)

    # ------------------------------------------------------------ context manager

    def __enter__(self) -> "LoopBtrfs":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LoopExt4(LoopBtrfs):
    """An ext4 filesystem WITH a journal (mkfs.ext4's default) on a loop device, for the bench's
    scratch dir: a filesystem whose state the bench owns, as a host's would be.

    Why not the machine's own temporary directory: an ext4 without a journal (as some VM images
    have) checks every free inode it might hand out for a recent deletion, reading inode tables
    (``recently_deleted`` in the kernel's inode allocator), so after thousands of files were
    deleted, creating files costs several times the CPU it costs on a journaled ext4; a bench
    that deletes restored trees between runs would measure that, unequally between its sides.
    ``discard`` gives deleted blocks back to the sparse image; ``noinit_itable`` keeps the
    kernel's background inode-table zeroing off the measured runs."""

    KIND = "ext4"

    def _make_filesystem(self) -> None:
        _run(["mkfs.ext4", "-q", "-F", self.device])
        _run(["mount", "-t", "ext4", "-o", "noatime,discard,noinit_itable", self.device, str(self.mountpoint)])


def ext4_unavailable_reason() -> str | None:
    """None when a loop-device ext4 can be made here; otherwise why not."""
    if os.geteuid() != 0:
        return f"a loop-device filesystem needs root; running as uid {os.geteuid()}"
    missing = [tool for tool in ("mkfs.ext4", "losetup", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        return f"a loop-device ext4 needs {', '.join(missing)} on PATH (e2fsprogs, util-linux)"
    if not Path("/dev/loop-control").exists():
        return "loop devices are missing: /dev/loop-control does not exist"
    return None
