"""The attack programs, as data: one source for every path that runs untrusted code.

`tests/sandbox/test_runner_attacks.py` runs them on the runner directly (with its own,
precise assertions); the reliability suite (`tests/reliability/`) and
`bench/reliability.py` run the same programs as model answers through `tta verify`, the
sandbox service and a job. Each builder returns a fresh program for one run: markers,
ports and paths are arguments, so a survivor or a stray file can be traced to its run.

`CATALOG` lists every attack with a builder over one `Target` (what the attack aims at on
this host) and a host-side `contained` check. Containment, on any path, means: the attempt
does not pass, nothing the attack aimed at outside the sandbox was touched (no survivors,
no files, no connection, no secret in what comes back), and the host process still runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

# ---- the programs (builders) ------------------------------------------------------------------


def _named(marker: str) -> str:
    """Prefix that names the process `marker[:15]` (its comm, inherited by forks): code run
    by the harness has no marker in its command line, and survivors must still be found."""
    return ("try:\n    import ctypes\n"
            f"    ctypes.CDLL(None).prctl(15, {marker[:15]!r}.encode(), 0, 0, 0)  # PR_SET_NAME\n"
            "except Exception:\n    pass\n")


def fork_bomb(marker: str) -> str:
    return _named(marker) + f"import os\n# {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def process_limit() -> str:
    return ("import os\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
            "            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n")


def memory_bomb() -> str:
    return "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))\n"


def infinite_loop() -> str:
    return "while True:\n    pass\n"


def busy_threads(marker: str) -> str:
    return _named(marker) + (f"import threading\n# {marker}\ndef spin():\n    while True:\n        pass\n"
            "for _ in range(100):\n    try:\n        threading.Thread(target=spin).start()\n    except RuntimeError:\n        break\n")


def sleep_past_timeout() -> str:
    return "import time\ntime.sleep(60)\n"


def background_children(marker: str) -> str:
    return (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )


def network_egress(ports: list[int]) -> str:
    return (
        "import socket\n"
        f"for port in {tuple(ports)!r}:\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=1).sendall(b'PING\\r\\n')\n"
        "        print('CONNECTED', port)\n"
        "    except OSError as exc:\n"
        "        print('blocked', port, exc)\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 80)\n"
        "    print('RESOLVED')\n"
        "except OSError:\n"
        "    print('no dns')\n"
    )


def write_outside(targets: list[str]) -> str:
    return (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "    except OSError as exc:\n"
        "        print('denied', path, exc.errno)\n"
        "open('/sandbox/ok.txt', 'w').write('fine')\n"
        "print('workdir ok')\n"
    )


def read_environment() -> str:
    return (
        "import os\nprint(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/environ').read())\n"
        "        except OSError:\n"
        "            pass\n"
    )


def read_other_proc(host_pid: int) -> str:
    return (
        "import os\n"
        "print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        f"for path in ('/proc/{host_pid}/environ', '/proc/{host_pid}/cmdline', '/proc/1/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read()[:200])\n"
        "    except OSError as exc:\n"
        "        print(path, 'denied', exc.errno)\n"
    )


def huge_stdout() -> str:
    return "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\n"


def huge_file() -> str:
    return (
        "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "try:\n"
        "    with open('/sandbox/big', 'wb') as f:\n"
        "        for _ in range(100):\n"
        "            f.write(b'x' * 1_000_000)\n"
        "    print('WROTE ALL')\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno)\n"
    )


def deep_recursion(raise_limit: bool = True) -> str:
    head = "import sys\nsys.setrecursionlimit(10**7)\n" if raise_limit else ""
    return head + "def f(n):\n    return f(n + 1)\n"


SIGNAL_PARENT = (
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "import os, signal\nfor pid in range(1, 50):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n",
)


def exhaust_fds() -> str:
    return ("fds = []\ntry:\n    while True:\n        fds.append(open('/dev/null'))\n"
            "except OSError as exc:\n    print('stopped at', len(fds), exc.errno)\n")


def forge_results() -> str:
    """Writes fake `case ok` / `done` records to every fd it can, then exits 0."""
    return (
        "import json, os, sys\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, (json.dumps({'t': 'case', 'i': 0, 'status': 'ok', 'output': '42', 'n': 'guess'}) + '\\n').encode())\n"
        "        os.write(fd, (json.dumps({'t': 'done', 'n': 'guess'}) + '\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "print('{\"t\": \"done\"}')\nos._exit(0)\n"
    )


# ---- host-side checks ----------------------------------------------------------------------------


def survivors(marker: str) -> list[dict]:
    """Processes on this host whose command line carries `marker`, or that are named for it."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if proc.info["name"] == marker[:15] or any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc.info)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def as_answer(program: str) -> str:
    """The program as a model would write it: one fenced python block."""
    return f"Here is my solution.\n```python\n{program}```\n"


# ---- the catalog, for paths that treat every attack alike ---------------------------------------------


@dataclass
class Target:
    """What the attacks of one run aim at on this host. `close()` when done."""

    host_pid: int = field(default_factory=os.getpid)
    marker: str = field(default_factory=lambda: "atk" + uuid.uuid4().hex[:12])  # 15 chars: a whole process name
    secrets: tuple[str, ...] = ()  # values present in the environment of the process that verifies
    ports: tuple[int, ...] = ()  # loopback services that must stay unreachable (Redis, the API...)
    listener: socket.socket = field(init=False)
    outside: list[str] = field(init=False)

    def __post_init__(self) -> None:
        # a listener of our own on loopback: the attack connecting to it would show in accept()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.setblocking(False)
        name = f"pwned_{uuid.uuid4().hex}"
        self.outside = [f"/tmp/{name}", str(Path(__file__).resolve().parents[2] / name), f"/root/{name}",
                        f"/usr/{name}"]

    @property
    def all_ports(self) -> list[int]:
        return [*self.ports, self.listener.getsockname()[1]]

    def accepted(self) -> bool:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.listener.close()


@dataclass(frozen=True)
class Attack:
    name: str
    program: Callable[[Target], str]
    what: str  # one line for the figures table


CATALOG: tuple[Attack, ...] = (
    Attack("fork_bomb", lambda t: fork_bomb(t.marker), "fork until the process limit, forever"),
    Attack("process_limit", lambda t: process_limit(), "hold 200 sleeping children"),
    Attack("memory_bomb", lambda t: memory_bomb(), "allocate 50 MB blocks without end"),
    Attack("infinite_loop", lambda t: infinite_loop(), "spin forever"),
    Attack("busy_threads", lambda t: busy_threads(t.marker), "100 spinning threads"),
    Attack("sleep_past_timeout", lambda t: sleep_past_timeout(), "sleep 60 s"),
    Attack("background_children", lambda t: background_children(t.marker), "a setsid'd grandchild left behind"),
    Attack("network_egress", lambda t: network_egress(t.all_ports), "connect to Redis, the API and a loopback listener; DNS"),
    Attack("write_outside", lambda t: write_outside(t.outside), "write to /tmp, the repo, /root, /usr"),
    Attack("read_environment", lambda t: read_environment(), "dump os.environ and every /proc/*/environ"),
    Attack("read_other_proc", lambda t: read_other_proc(t.host_pid), "read the host process's /proc entries"),
    Attack("huge_stdout", lambda t: huge_stdout(), "write 20 MB to stdout"),
    Attack("huge_file", lambda t: huge_file(), "write a 100 MB file"),
    Attack("deep_recursion", lambda t: deep_recursion() + "f(0)\n", "unbounded recursion with the limit raised"),
    Attack("kill_parent", lambda t: SIGNAL_PARENT[0], "SIGKILL the parent"),
    Attack("kill_all", lambda t: SIGNAL_PARENT[1], "SIGKILL -1 (every process it can signal)"),
    Attack("kill_pids", lambda t: SIGNAL_PARENT[2], "SIGKILL pids 1..49"),
    Attack("exhaust_fds", lambda t: exhaust_fds(), "open files until refused"),
    Attack("forge_results", lambda t: forge_results(), "forge the harness's result records, exit 0"),
)


def breaches(target: Target, outputs: list[str]) -> list[str]:
    """What escaped, judged on the host after a run: [] when the attack was contained.
    `outputs`: everything the verifying path handed back (feedback, CLI output, API bodies)."""
    found = []
    if survivors(target.marker):
        found.append(f"processes survived: {survivors(target.marker)}")
    found += [f"wrote {p}" for p in target.outside if Path(p).exists()]
    if target.accepted():
        found.append("connected to the loopback listener")
    text = "\n".join(outputs)
    found += [f"secret {s[:4]}... came back" for s in target.secrets if s and s in text]
    if not psutil.pid_exists(target.host_pid):
        found.append("the host process died")
    return found
