"""Helper processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with(parent_pid: int) -> None:
    """Call first thing in a child: it is killed when `parent_pid` (its parent)
    dies, and exits at once if that already happened. Linux only."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the signal was armed
        os._exit(1)


_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38


def no_new_privileges() -> None:
    """No exec of this process can gain a privilege (no_new_privs), and a root one's bounding
    set is emptied. Both are per thread, inherited by threads started after: call it first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last_cap = int(f.read())
        for cap in range(last_cap + 1):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} from the bounding set")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot set no_new_privs")


def become(uid: int) -> None:
    """For good: the groups, gid and uid (real, effective and saved: no way back) of every
    thread become `uid` (glibc changes them all), so no capability is left. It clears the
    parent-death signal: arm it (die_with) after."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to all-non-zero ids: permitted and effective caps go
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid) or os.getgroups():
        raise PermissionError(f"could not become uid {uid}")
