"""`make run`'s supervisor: start every process of a Procfile, restart one that dies, or stop loudly.

    python -m config.supervise config/Procfile

1. Each Procfile line starts as `bash -c "exec <command>"` in its own process group, its output prefixed
   with its name (as honcho does; honcho parses the Procfile).
2. A process that exits is restarted after a short pause — what `restart: unless-stopped` does in
   docker-compose — so a killed worker, relay or beat comes back by itself.
3. A process that dies MAX_RESTARTS times within RESTART_WINDOW_SECONDS is crash-looping: everything is
   stopped and the supervisor exits 1 with a message naming the process, instead of looping quietly.
4. Ctrl-C / SIGTERM stops every process group (TERM, then KILL after 10 s) and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from honcho.environ import parse_procfile

MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
RESTART_PAUSE_SECONDS = 1.0


class Supervisor:
    def __init__(self, commands: dict[str, str]) -> None:
        self.commands = commands
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.deaths: dict[str, deque[float]] = {name: deque() for name in commands}
        self.stopping = False
        self.width = max(len(n) for n in commands)

    def _say(self, name: str, line: str) -> None:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | {line}\n")
        sys.stdout.flush()

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self._say(name, raw.decode(errors="replace").rstrip())

    def start(self, name: str) -> None:
        # The Procfile is the operator's own file, run as `make run` always ran it (through a shell).
        process = subprocess.Popen(  # noqa: S603
            ["bash", "-c", f"exec {self.commands[name]}"],  # noqa: S607
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        threading.Thread(target=self._pump, args=(name, process), daemon=True).start()
        self._say("supervise", f"started {name} (pid {process.pid})")

    def stop_all(self) -> None:
        self.stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    def run(self) -> int:
        for name in self.commands:
            self.start(name)
        while not self.stopping:
            time.sleep(0.5)
            for name, process in list(self.processes.items()):
                code = process.poll()
                if code is None or self.stopping:
                    continue
                now = time.monotonic()
                deaths = self.deaths[name]
                deaths.append(now)
                while deaths and now - deaths[0] > RESTART_WINDOW_SECONDS:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    self._say("supervise", f"{name} died {len(deaths)} times in {RESTART_WINDOW_SECONDS:.0f}s "
                              f"(last exit {code}); stopping everything")  # fmt: skip
                    self.stop_all()
                    sys.stderr.write(f"make run: {name} keeps dying (exit {code}); see its output above\n")
                    return 1
                self._say("supervise", f"{name} exited with {code}; restarting it")
                time.sleep(RESTART_PAUSE_SECONDS)
                self.start(name)
        return 0


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "config/Procfile")
    commands = dict(parse_procfile(path.read_text()).processes)
    supervisor = Supervisor(commands)

    def _stop(signum: int, _frame: object) -> None:
        supervisor._say("supervise", f"signal {signum}: stopping everything")
        supervisor.stop_all()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
