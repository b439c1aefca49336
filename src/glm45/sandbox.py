"""Run untrusted Python code in a contained child process.

`run_python(code)` writes `code` to `main.py` in a fresh temporary directory and runs it with
`python -I` in a separate process. Containment comes in layers; each is used when this machine
allows it, and `SandboxResult.isolation` names the layers that were in force:

- ``netns`` / ``pidns``: the child runs under ``unshare --net --pid --mount-proc`` — no network
  interface but a downed loopback, and a private process tree, so it cannot see, signal or read the
  environment of any process outside (needs root or unprivileged user namespaces).
- ``uid``: when we are root, the child runs as a fresh unprivileged uid, so the kernel refuses
  writes to files it does not own, enforces ``RLIMIT_NPROC`` per sandbox (root is exempt from it)
  and hides other processes' ``/proc/<pid>/environ``. Directories on the way to the interpreter that
  other users may not enter (a venv under ``/root``, mode 0700) are covered, in the sandbox's private
  mount namespace, by an empty tmpfs into which only the entries leading to the interpreter, its
  libraries and the working directory are bind-mounted back — the rest of them stays out of sight.
- ``rlimits``: address space (``memory_mb``), CPU seconds, file size, process count, no core dumps.
- ``audit``: a ``sys.addaudithook`` hook in the child refuses sockets (connect, bind, sendto, DNS),
  opening for writing / creating / renaming / removing anything outside the working directory,
  starting other programs (``os.system``, ``subprocess``, ``exec*``, ``posix_spawn``), reading other
  processes' ``/proc/<pid>`` entries, and signalling processes outside the sandbox. ``os.fork`` is
  allowed (children inherit the hook) and fork bombs are stopped by the process limit — except
  where the child would run as root, which that limit does not bind: there ``fork`` is refused.

The audit hook alone is a best-effort guard (``ctypes`` can step around it); the kernel layers are
the real boundary, and on this kind of machine (root on Linux) all of them are used. Reading
world-readable files is allowed (the interpreter and its packages need it). The child's
environment is scrubbed to a minimal ``PATH`` (plus ``HOME``/``TMPDIR`` pointing at its working
directory); on timeout the whole process group — and, with ``uid``, every process of that uid — is
killed; the working directory is removed afterwards. Every call gets its own directories, uid and
process group, so many sandboxes can run at once from threads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["SandboxError", "SandboxResult", "run_python", "isolation_layers"]


class SandboxError(ValueError):
    """Bad arguments to the sandbox (not a failure of the code that ran inside it)."""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # exited with status 0 within the time limit
    returncode: int | None  # negative: killed by that signal; None: killed by the harness on timeout
    stdout: str
    stderr: str
    timed_out: bool  # wall-clock limit reached, or the CPU-time limit (derived from it) hit
    wall_s: float
    output_truncated: bool  # stdout or stderr was longer than max_output_bytes
    isolation: tuple[str, ...]


_MAIN = "main.py"
_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"
_UID_RANGE = (1_000_000, 2_000_000_000)

# The child program. Runs as the sandbox's first process: forks the user program and waits for it
# (under a PID namespace it is PID 1, which the kernel shields from most signals — the user code must
# not be), then reports the user program's exit status on a pipe. The user program sets its rlimits,
# installs the audit hook and executes main.py as __main__.
_BOOT = r'''
import json, os, sys
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
if cfg["expose"] or cfg["uid"] is not None:
    # We are root in a private mount namespace. Directories on the way to the interpreter that a
    # fresh uid may not enter (e.g. /root, mode 0700) are covered with an empty tmpfs into which
    # only the entries needed are bind-mounted back; then we drop to the sandbox uid for good.
    import subprocess
    def mount(*args):
        r = subprocess.run(["mount", *args], capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(f"sandbox setup: mount {' '.join(args)} failed: {r.stderr}")
            os._exit(125)
    for i, (blocked, entries) in enumerate(cfg["expose"]):
        staged = []
        for j, entry in enumerate(entries):
            source, stage = os.path.join(blocked, entry), os.path.join(cfg["stage"], f"{i}.{j}")
            is_dir = os.path.isdir(source)
            os.mkdir(stage) if is_dir else open(stage, "w").close()
            mount("--bind", source, stage)
            staged.append((entry, stage, is_dir))
        mount("-t", "tmpfs", "-o", "mode=755,size=64k", "tmpfs", blocked)
        for entry, stage, is_dir in staged:
            target = os.path.join(blocked, entry)
            os.mkdir(target) if is_dir else open(target, "w").close()
            mount("--move", stage, target)
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
child = os.fork()
if child:
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os.write(status_fd, json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            os._exit(0)
os.close(status_fd)

import resource
def limit(res, soft, hard=None):
    resource.setrlimit(res, (soft, soft if hard is None else hard))
limit(resource.RLIMIT_AS, cfg["as_bytes"])
limit(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1)
limit(resource.RLIMIT_FSIZE, cfg["fsize_bytes"])
limit(resource.RLIMIT_CORE, 0)
nproc = cfg["nproc"]
if cfg["shared_uid"]:
    # Our uid is shared with other processes: RLIMIT_NPROC counts all their threads too.
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    nproc += int(fields["Threads"])
            except (OSError, KeyError, ValueError):
                pass
limit(resource.RLIMIT_NPROC, nproc)

WD = os.path.realpath(cfg["workdir"])
os.chdir(WD)
sys.path.insert(0, WD)
main_path = os.path.join(WD, cfg["main"])
sys.argv = [main_path]
with open(main_path, encoding="utf-8") as f:
    source = f.read()

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
NET_EVENTS = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
              "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
              "socket.getnameinfo"}
SPAWN_EVENTS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.forkpty",
                "subprocess.Popen", "pty.spawn"}
# event -> positions of (path, dir_fd) pairs among its arguments
MUTATIONS = {"os.remove": [(0, 1)], "os.rmdir": [(0, 1)], "os.mkdir": [(0, 2)],
             "os.rename": [(0, 2), (1, 3)], "os.link": [(1, 3)], "os.symlink": [(1, 2)],
             "os.chmod": [(0, 2)], "os.chown": [(0, 3)], "os.utime": [(0, 3)],
             "os.truncate": [(0, None)], "os.setxattr": [(0, None)], "os.removexattr": [(0, None)],
             "os.chflags": [(0, None)], "os.lchflags": [(0, None)]}

def resolve(path, dir_fd=None):
    p = os.fsdecode(path)
    if dir_fd is not None and dir_fd >= 0 and not os.path.isabs(p):
        p = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
    return os.path.realpath(p)

def writable(path, dir_fd=None):
    if isinstance(path, int):  # an already-open descriptor
        return True
    real = resolve(path, dir_fd)
    return real == WD or real.startswith(WD + os.sep) or real == "/dev/null"

def own_group(pid):
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return False

def hook(event, args):
    if event == "open":
        path, flags = args[0], args[2]
        if isinstance(path, int):
            return
        if flags & WRITE_FLAGS and not writable(path):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
        parts = resolve(path).split("/")
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != os.getpid():
            raise PermissionError(f"sandbox: reading other processes is not allowed: {path!r}")
    elif event in NET_EVENTS:
        raise PermissionError("sandbox: network access is disabled")
    elif event in SPAWN_EVENTS:
        raise PermissionError("sandbox: starting other programs is disabled")
    elif event in MUTATIONS:
        for path_i, fd_i in MUTATIONS[event]:
            dir_fd = args[fd_i] if fd_i is not None else None
            if not writable(args[path_i], dir_fd):
                raise PermissionError("sandbox: changing files outside the working directory is not "
                                      f"allowed: {args[path_i]!r}")
    elif event == "os.fork" and cfg["deny_fork"]:
        raise PermissionError("sandbox: fork is disabled here (running as root, no process limit holds)")
    elif event == "os.kill":
        pid = args[0]
        if not (pid == 0 or pid == os.getpid() or (pid > 0 and own_group(pid)) or (pid < 0 and -pid == os.getpgrp())):
            raise PermissionError("sandbox: signalling processes outside the sandbox is not allowed")
    elif event == "os.killpg":
        if args[0] != os.getpgrp():
            raise PermissionError("sandbox: signalling processes outside the sandbox is not allowed")

sys.addaudithook(hook)
del hook
import types, traceback
module = types.ModuleType("__main__")
module.__file__ = main_path
module.__builtins__ = __builtins__
sys.modules["__main__"] = module
try:
    exec(compile(source, main_path, "exec"), module.__dict__)
except SystemExit:
    raise
except BaseException as exc:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != main_path:
        tb = tb.tb_next  # drop the boot frames; the user sees a traceback of main.py only
    traceback.print_exception(type(exc), exc, tb)
    sys.exit(1)
'''




@dataclass(frozen=True)
class _Isolation:
    prefix: tuple[str, ...]  # command wrapping the interpreter (unshare ...); may be empty
    uid_mode: str  # "" (keep our uid) | "boot" (root boot drops to a fresh uid) | "popen" (subprocess does)
    layers: tuple[str, ...]


_NS = ("--net", "--pid", "--fork", "--mount-proc", "--kill-child")
_iso_lock = threading.Lock()
_iso: _Isolation | None = None
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _candidates() -> list[_Isolation]:
    """Containment setups from strongest to weakest; the first that works here is used."""
    unshare = shutil.which("unshare")
    full = ("netns", "pidns", "uid", "rlimits", "audit")
    out = []
    if os.geteuid() == 0:
        if unshare and shutil.which("mount"):
            out.append(_Isolation((unshare, *_NS), "boot", full))
        if unshare:
            out.append(_Isolation((unshare, *_NS), "", ("netns", "pidns", "rlimits", "audit")))
        out.append(_Isolation((), "popen", ("uid", "rlimits", "audit")))
    elif unshare:
        out.append(_Isolation((unshare, "--user", "--map-root-user", *_NS), "",
                              ("netns", "pidns", "rlimits", "audit")))
    out.append(_Isolation((), "", ("rlimits", "audit")))
    return out


def _isolation() -> _Isolation:
    global _iso
    with _iso_lock:
        if _iso is None:
            for candidate in _candidates():
                try:
                    probe = _execute(candidate, "print('ok')", timeout_s=30, memory_mb=512, files={},
                                     stdin=None, max_output_bytes=100, file_size_mb=1, max_processes=8)
                except OSError:
                    continue
                if probe.ok and probe.stdout == "ok\n":
                    _iso = candidate
                    break
            else:
                raise RuntimeError("sandbox: cannot start even an unisolated child interpreter")
        return _iso


def isolation_layers() -> tuple[str, ...]:
    """The containment layers `run_python` uses on this machine (probed once per process)."""
    return _isolation().layers


def _allocate_uid() -> int:
    with _uid_lock:
        while True:
            uid = random.randrange(*_UID_RANGE)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _exposures(paths: list[str]) -> list[tuple[str, list[str]]]:
    """For `paths` the sandbox uid must reach: each directory on the way that others may not enter
    (no o+x), with the entries inside it that lead to those paths; outermost first."""
    need: dict[str, set[str]] = {}
    for p in paths:
        for path in {os.path.abspath(p), os.path.realpath(p)}:
            parts = PurePosixPath(path).parts
            for k in range(1, len(parts)):
                parent = str(PurePosixPath(*parts[:k]))
                try:
                    traversable = os.stat(parent).st_mode & stat.S_IXOTH
                except OSError:
                    break
                if not traversable:
                    need.setdefault(parent, set()).add(parts[k])
    return [(d, sorted(need[d])) for d in sorted(need, key=lambda d: (d.count("/"), d))]


def _check_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or str(p) in ("", ".", _MAIN):
        raise SandboxError(f"sandbox file name {name!r} must be a relative path inside the working "
                           f"directory (no '..', not {_MAIN!r})")
    return p


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process of `uid` until none is left (stragglers that left our group)."""
    for _ in range(200):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if int(fields["Uid"].split()[0]) != uid or fields["State"].strip().startswith("Z"):
                    continue
                os.kill(int(entry), signal.SIGKILL)
                found = True
            except (OSError, KeyError, ValueError):
                continue
        if not found:
            return
        time.sleep(0.005)


def _remove_tree(path: str) -> None:
    # Processes being killed may still hold or create files for a moment; retry briefly.
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.02)


def _read_capped(path: str, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def run_python(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    files: dict[str, str | bytes] | None = None,
    stdin: str | None = None,
    max_output_bytes: int = 1_000_000,
    file_size_mb: int = 16,
    max_processes: int = 32,
) -> SandboxResult:
    """Run `code` as `main.py` in a contained child process and return what it did.

    `files` are written next to main.py first (relative names; text or bytes), so the code can
    import or read them. `stdin` is fed to the program. Output beyond `max_output_bytes` per stream
    is dropped (`output_truncated`); a file (stdout included) beyond `file_size_mb` kills the child
    with SIGXFSZ. `max_processes` bounds the sandbox's processes and threads together.
    """
    if not isinstance(code, str):
        raise SandboxError(f"code must be a str, got {type(code).__name__}")
    if not timeout_s > 0:
        raise SandboxError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 64:
        raise SandboxError(f"memory_mb must be at least 64 (the interpreter needs it), got {memory_mb}")
    if max_processes < 1 or file_size_mb < 1 or max_output_bytes < 0:
        raise SandboxError("max_processes and file_size_mb must be >= 1 and max_output_bytes >= 0")
    for name in files or {}:
        _check_name(name)
    return _execute(_isolation(), code, timeout_s=timeout_s, memory_mb=memory_mb, files=files or {},
                    stdin=stdin, max_output_bytes=max_output_bytes, file_size_mb=file_size_mb,
                    max_processes=max_processes)


def _execute(iso: _Isolation, code: str, *, timeout_s: float, memory_mb: int,
             files: dict[str, str | bytes], stdin: str | None, max_output_bytes: int,
             file_size_mb: int, max_processes: int) -> SandboxResult:
    uid = _allocate_uid() if iso.uid_mode else None
    io_dir = tempfile.mkdtemp(prefix="glm45-sbx-io-")  # ours only: stdin/stdout/stderr, mount staging
    workdir = tempfile.mkdtemp(prefix="glm45-sbx-")
    status_r = status_w = -1
    try:
        for name, content in files.items():
            dest = os.path.join(workdir, *PurePosixPath(name).parts)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else bytes(content))
        with open(os.path.join(workdir, _MAIN), "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            for dirpath, dirnames, filenames in os.walk(workdir):
                for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                    os.chown(name, uid, uid)
        stdin_path = os.path.join(io_dir, "stdin")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(stdin or "")
        out_path, err_path = os.path.join(io_dir, "stdout"), os.path.join(io_dir, "stderr")

        status_r, status_w = os.pipe()
        expose = []
        if iso.uid_mode == "boot":
            needed = [sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, workdir]
            expose = _exposures(needed + [p for p in sys.path if p and os.path.exists(p)])
        cfg = {
            "status_fd": status_w, "workdir": workdir, "main": _MAIN, "stage": io_dir,
            "uid": uid if iso.uid_mode == "boot" else None, "expose": expose,
            "as_bytes": memory_mb * 1024 * 1024, "cpu_s": int(timeout_s) + 1,
            "fsize_bytes": file_size_mb * 1024 * 1024, "nproc": max_processes,
            "shared_uid": uid is None,
            # root is exempt from RLIMIT_NPROC: without a uid of its own a fork bomb has no bound
            "deny_fork": uid is None and os.geteuid() == 0,
        }
        cmd = [*iso.prefix, sys.executable, "-I", "-c", _BOOT, json.dumps(cfg)]
        env = {"PATH": _ENV_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        popen_kwargs = {}
        if iso.uid_mode == "popen":
            popen_kwargs = {"user": uid, "group": uid, "extra_groups": []}

        start = time.monotonic()
        timed_out = False
        with open(stdin_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=workdir,
                                    start_new_session=True, pass_fds=(status_w,), **popen_kwargs)
        os.close(status_w)
        status_w = -1
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the program, and anything it left behind
            except ProcessLookupError:
                pass
            proc.wait()
            if uid is not None:
                _kill_uid(uid)
        wall = time.monotonic() - start

        os.set_blocking(status_r, False)
        try:
            status = json.loads(os.read(status_r, 4096) or b"{}")
        except (BlockingIOError, ValueError):
            status = {}
        returncode = None if timed_out else status.get("exit", proc.returncode)
        if returncode == -signal.SIGXCPU:
            timed_out = True
        stdout, trunc_out = _read_capped(out_path, max_output_bytes)
        stderr, trunc_err = _read_capped(err_path, max_output_bytes)
        return SandboxResult(ok=returncode == 0 and not timed_out, returncode=returncode,
                             stdout=stdout, stderr=stderr, timed_out=timed_out, wall_s=wall,
                             output_truncated=trunc_out or trunc_err, isolation=iso.layers)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        _remove_tree(workdir)
        _remove_tree(io_dir)
        if uid is not None:
            _release_uid(uid)
