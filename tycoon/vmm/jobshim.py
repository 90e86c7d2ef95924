"""A job's own parent: started by the host (as root on the cgroups driver), it starts the
user's program as the account's uid, waits for it, and writes its exit status and rusage to
a host-only file — so a host restarted meanwhile still learns how the job ended.

Run as ``python -I -S jobshim.py STATUS_FD`` by :func:`tycoon.vmm.jobs.spawn`, with the
spec (:func:`parse`: argv, env, cwd, uid, procs, exit) on stdin (a memfd), the job's output files as
stdout and stderr, and ``STATUS_FD`` a pipe to the host. It forks the program, which makes
its own session (the host signals that process group, never the shim), joins the account's
cgroups (a frozen account freezes it right there, before it runs anything), drops to the
uid and execs; the host hears ``pid N`` (once its session exists), then ``ok`` or ``err
ERRNO STAGE`` once its exec is done, and the shim joins
the cgroups itself (freeze and kill cover it too), waits, and writes
``{"status", "cpu_s", "peak_memory"}`` atomically to the exit file (0600; status negative:
the signal that ended it). It stays root, so the job's uid cannot signal, trace or kill it,
and it shields itself from the OOM killer (the program does not). Stdlib only, small
imports: one runs per job (its cost: docs/jobs.md "Restarts"). Never prints: its stdout and
stderr are the job's; a failed exec is said on the job's stderr, status 127.
"""

import _signal  # not signal (its enum import), not json: ~1 MB less per job
import os
import sys
import warnings  # noqa: F401  os.execvpe imports it (PATH search) after setresuid


def _write(fd: int, text: str) -> None:
    try:  # noqa: SIM105 (no contextlib: its imports weigh on every job's shim)
        os.write(fd, text.encode())
    except OSError:
        pass  # the host went away meanwhile: the exit file still tells the next one


def _join(paths: list, pid: int) -> None:
    for path in paths:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)


def _child(spec: dict, status: int, errw: int) -> None:
    """In the forked child: session, cgroups, OOM score, uid, directory, exec."""
    stage = "setup"
    try:
        os.setsid()  # before the host hears its pid: its group exists when it is signalled
        _write(status, f"pid {os.getpid()}\n")
        for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):  # as a program expects them
            _signal.signal(sig, _signal.SIG_DFL)
        stage = "cgroup"
        _join(spec["procs"], os.getpid())  # frozen account: stops here, runs nothing
        try:
            with open("/proc/self/oom_score_adj", "w") as handle:
                handle.write("0")
        except OSError:
            pass
        uid = spec["uid"]
        if uid >= 0:
            stage = "uid"
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        stage = "cwd"
        os.chdir(spec["cwd"])  # with the user's rights, not root's
        stage = "exec"  # warnings is imported above: the uid may not read the stdlib
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as error:
        _write(errw, f"{error.errno} {stage}")
        _write(2, f"tycoon: cannot start {spec['argv'][0][:200]} ({stage}): "
                  f"{error.strerror}\n")
    finally:
        os._exit(127)


def parse(data: bytes) -> dict:
    """The spec: NUL-separated ``uid, cwd, exit, N, N procs files, N, N argv, N, N env
    entries (NAME=value)`` (no NUL inside: the host refuses them) — see
    :func:`tycoon.vmm.jobs.shim_spec`."""
    items = [item.decode() for item in data.split(b"\0")]
    spec: dict = {"uid": int(items[0]), "cwd": items[1], "exit": items[2]}
    at = 3
    for key in ("procs", "argv", "env"):
        count = int(items[at])
        spec[key] = items[at + 1:at + 1 + count]
        at += 1 + count
    spec["env"] = dict(entry.split("=", 1) for entry in spec["env"])
    return spec


def _save(path: str, status: int, cpu_s: float, peak: int) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:  # JSON, by hand (a finite float's repr is a JSON number)
        os.write(fd, f'{{"status": {status:d}, "cpu_s": {float(cpu_s)!r}, '
                     f'"peak_memory": {peak:d}}}'.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def main() -> int:
    status = int(sys.argv[1])
    data = b""
    while True:
        part = os.read(0, 1 << 20)
        if not part:
            break
        data += part
    spec = parse(data)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.set_inheritable(status, False)
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("-1000")  # root: never the OOM victim (the program resets its own)
    except OSError:
        pass
    errr, errw = os.pipe()  # close-on-exec: EOF when the program's exec succeeded
    pid = os.fork()
    if pid == 0:
        os.close(errr)
        _child(spec, status, errw)
    os.close(errw)
    failed = b""
    while True:
        part = os.read(errr, 64)
        if not part:
            break
        failed += part
    os.close(errr)
    _write(status, f"err {failed.decode()}\n" if failed else "ok\n")
    try:  # noqa: SIM105
        _join(spec["procs"], os.getpid())  # with the program: frozen and killed with it
    except OSError:
        pass  # the account's cgroup is gone: the program is being ended anyway
    os.close(status)
    _, raw, usage = os.wait4(pid, 0)
    _save(spec["exit"], os.waitstatus_to_exitcode(raw), usage.ru_utime + usage.ru_stime,
          usage.ru_maxrss * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
