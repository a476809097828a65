"""CPU an idle hub spends: the hub process and its bundled broker child, CPU seconds (user +
system, from /proc, so the figure holds on a loaded machine) over a window after start-up.

Usage: `.venv/bin/python bench/idle_cpu.py [--settle 10] [--seconds 20]`
"""

from __future__ import annotations

import argparse
import os
import time

from harness import free_port, start_hub

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def main(args) -> None:
    proc = start_hub(free_port())
    try:
        time.sleep(args.settle)  # consumer groups join, first sweeps and scans run
        pids = {"hub": proc.pid, **{f"broker (pid {p})": p for p in children(proc.pid)}}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - t0
        load = os.getloadavg()
        for name, pid in pids.items():
            used = cpu_seconds(pid) - before[name]
            print(f"{name:<20} {used:6.2f} CPU s over {wall:.0f} s = {100 * used / wall:5.1f} % of a core")
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start-up before measuring")
    parser.add_argument("--seconds", type=float, default=20.0)
    main(parser.parse_args())
