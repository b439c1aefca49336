"""The code sandbox: normal code runs; escapes (network, writes outside, fork bombs, runaway loops,
memory bombs, the parent's secrets) are contained."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from glm45.sandbox import SandboxError, isolation_layers, run_python


@pytest.fixture
def public_dir():
    """A world-writable directory whose ancestors everyone may enter (pytest's tmp_path is under a
    0700 directory, which would stop a sandbox uid before any check of ours)."""
    path = tempfile.mkdtemp(prefix="glm45-test-public-")
    os.chmod(path, 0o777)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_normal_code_runs_and_returns_output():
    r = run_python("import sys\nprint('hello', sum(range(10)))\nprint('warn', file=sys.stderr)")
    assert r.ok and r.returncode == 0 and not r.timed_out
    assert r.stdout == "hello 45\n"
    assert r.stderr == "warn\n"


def test_exit_status_exception_stdin_and_files():
    assert run_python("import sys; sys.exit(3)").returncode == 3
    r = run_python("def f():\n    return 1 / 0\nf()\n")
    assert not r.ok and r.returncode == 1
    assert "ZeroDivisionError" in r.stderr and "main.py" in r.stderr and "_BOOT" not in r.stderr
    r = run_python("import helper\nprint(helper.X, open('data/in.txt').read(), input())",
                   files={"helper.py": "X = 7\n", "data/in.txt": "abc"}, stdin="line\n")
    assert r.ok, r.stderr
    assert r.stdout == "7 abc line\n"


def test_bad_file_names_and_arguments_are_rejected():
    for name in ["/etc/x", "../x", "a/../../x", "main.py", ""]:
        with pytest.raises(SandboxError):
            run_python("pass", files={name: "x"})
    with pytest.raises(SandboxError):
        run_python("pass", timeout_s=0)


def test_infinite_loop_is_killed_on_time():
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert r.timed_out and not r.ok
    assert time.monotonic() - start < 5
    r = run_python("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert r.timed_out


def test_memory_bomb_is_contained():
    r = run_python("x = bytearray(4 * 1024**3)\n", memory_mb=256)
    assert not r.ok and "MemoryError" in r.stderr
    r = run_python("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)\n", memory_mb=256, timeout_s=10)
    assert not r.ok and not r.timed_out and "MemoryError" in r.stderr


def test_fork_bomb_is_contained():
    code = (
        "import os, time\n"
        "for _ in range(10000):\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
        "time.sleep(30)\n"
    )
    start = time.monotonic()
    r = run_python(code, timeout_s=2.0, max_processes=8)
    assert r.timed_out and time.monotonic() - start < 10
    # The machine is still usable and nothing of the bomb survives.
    after = run_python("print('alive')")
    assert after.ok and after.stdout == "alive\n"


def test_writing_outside_the_working_directory_is_refused(public_dir):
    target = public_dir / f"escape-{uuid.uuid4().hex}"  # even a world-writable directory stays out of reach
    code = f"""
import os, pathlib
target = {str(target)!r}
attempts = {{
    "open": lambda: open(target, "w").write("x"),
    "os.open": lambda: os.open(target, os.O_WRONLY | os.O_CREAT),
    "pathlib": lambda: pathlib.Path(target).write_text("x"),
    "relative": lambda: open("../" + os.path.basename(os.getcwd()) + "-x", "w"),
    "rename": lambda: (open("a", "w").close(), os.rename("a", target)),
    "symlink": lambda: (os.symlink(target, "link"), open("link", "w").write("x")),
    "system": lambda: os.system("touch " + target),
    "chmod": lambda: os.chmod("/tmp", 0o700),
}}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "ESCAPED")
    except OSError as e:
        print(name, "blocked", type(e).__name__)
with open("inside.txt", "w") as f:  # writing inside is fine
    f.write("ok")
print(open("inside.txt").read())
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert "ESCAPED" not in r.stdout, r.stdout
    assert r.stdout.count("blocked") == 8 and r.stdout.endswith("ok\n")
    assert not target.exists()
    assert list(public_dir.iterdir()) == []
    assert oct(os.stat("/tmp").st_mode & 0o7777) == "0o1777"


def test_working_directory_is_fresh_and_removed():
    first = run_python("import os\nopen('junk', 'w').write('x')\nprint(os.getcwd())").stdout.strip()
    second = run_python("import os\nprint(os.getcwd(), os.listdir('.'))").stdout.split()
    assert first != second[0] and second[1] == "['main.py']"
    assert not os.path.exists(first)


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = f"""
import socket
for name, attempt in {{
    "connect": lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
    "dns": lambda: socket.getaddrinfo("example.com", 80),
    "bind": lambda: socket.socket().bind(("0.0.0.0", 0)),
}}.items():
    try:
        attempt()
        print(name, "ESCAPED")
    except OSError as e:
        print(name, "blocked")
"""
    try:
        r = run_python(code)
        assert r.ok, r.stderr
        assert r.stdout.split() == ["connect", "blocked", "dns", "blocked", "bind", "blocked"]
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


@pytest.mark.skipif("netns" not in isolation_layers(), reason="no network namespace on this machine")
def test_network_namespace_holds_even_past_the_audit_hook():
    """ctypes steps around the audit hook; the kernel namespace still has no route out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = f"""
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
addr = struct.pack("!HH4s8x", socket.AF_INET, {port}, socket.inet_aton("127.0.0.1"))
addr = struct.pack("H", socket.AF_INET) + addr[2:]
print("connect", libc.connect(fd, addr, len(addr)), ctypes.get_errno())
"""
    try:
        r = run_python(code)
        assert r.ok, r.stderr
        assert r.stdout.startswith("connect -1 "), r.stdout
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_parent_environment_is_invisible(monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("GLM45_TEST_SECRET", secret)
    code = f"""
import os
print(sorted(os.environ))
found = []
for pid in [{os.getpid()}, os.getppid(), 1] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as f:
            if {secret!r}.encode() in f.read():
                found.append(pid)
    except OSError:
        pass
print("found", found)
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert secret not in r.stdout
    assert r.stdout.splitlines()[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert r.stdout.splitlines()[1] == "found []"


@pytest.mark.skipif("uid" not in isolation_layers(), reason="the sandbox cannot run as another uid here")
def test_private_files_of_the_harness_are_unreadable(public_dir):
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    (private / "key").write_text("hush")
    (public_dir / "note").write_text("public")
    code = f"""
print(open({str(public_dir / 'note')!r}).read())
try:
    print(open({str(private / 'key')!r}).read())
except OSError as e:
    print("blocked", type(e).__name__)
"""
    r = run_python(code)
    assert r.ok and r.stdout == "public\nblocked PermissionError\n"


def test_cannot_signal_the_harness():
    r = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)\n")
    assert not r.ok  # refused (audit hook) or no such process (PID namespace); we are still here


def test_output_is_capped():
    r = run_python("print('x' * 100000)", max_output_bytes=1000)
    assert r.ok and r.output_truncated and len(r.stdout) == 1000


def test_many_sandboxes_at_once():
    def job(i: int):
        return run_python(f"import os\nprint({i}, os.getcwd())")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(8)))
    assert all(r.ok for r in results)
    assert [int(r.stdout.split()[0]) for r in results] == list(range(8))
    assert len({r.stdout.split()[1] for r in results}) == 8


@pytest.mark.slow
@pytest.mark.parametrize("index", range(5))
def test_weaker_fallbacks_still_contain(index, monkeypatch, public_dir):
    """Each fallback setup that works on this machine (fewer kernel layers) still contains escapes."""
    from glm45 import sandbox

    candidates = sandbox._candidates()
    if index >= len(candidates):
        pytest.skip("no such fallback on this machine")
    iso = candidates[index]
    monkeypatch.setattr(sandbox, "_iso", iso)
    try:
        probe = run_python("print('ok')")
    except OSError as e:  # the interpreter cannot even be started this way
        pytest.skip(f"setup {iso.layers} does not work here: {e}")
    if not probe.ok:
        pytest.skip(f"setup {iso.layers} does not work here: {probe.stderr[-200:]}")
    assert probe.isolation == iso.layers
    monkeypatch.setenv("GLM45_TEST_SECRET", "hush-hush")
    code = f"""
import os, socket
for name, attempt in {{
    "write": lambda: open({str(public_dir / 'x')!r}, "w"),
    "connect": lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    "environ": lambda: [open(f"/proc/{{p}}/environ").read() for p in ({os.getpid()}, os.getppid())],
    "spawn": lambda: os.system("true"),
}}.items():
    try:
        attempt()
        print(name, "ESCAPED")
    except OSError:
        print(name, "blocked")
print("GLM45_TEST_SECRET" in os.environ)
"""
    r = run_python(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["write", "blocked", "connect", "blocked", "environ", "blocked",
                                "spawn", "blocked", "False"]
    assert list(public_dir.iterdir()) == []
    bomb = run_python("import os, time\nfor _ in range(10000):\n    try:\n        os.fork()\n"
                      "    except OSError:\n        pass\ntime.sleep(30)\n", timeout_s=1.5, max_processes=8)
    assert bomb.timed_out
    assert run_python("print('alive')").stdout == "alive\n"
