"""hatrain's gap between starts in a burst, against the floor under it: the same processes spawned
straight from one Python process, with no agent at all, in interleaved rounds.

    python bench/burst_floor.py [--rounds 5]

bench/peers.py submits a burst of 10 jobs one gRPC call after another and times the spread of
their starts. Each round here runs, in turn:

  hatrain            that burst, raw gRPC, into `hatrain-agent serve` with the local runtime;
                     the mean time between its submit calls is noted
  floor, same pace   the same 10 step processes (the local runtime's wrapper running the peer
                     kit's `axolotl`, which writes the start time) spawned from one Python process
                     as far apart as hatrain's submits were: the least gap any scheduler could
                     show for submits that far apart
  floor, at once     the same, spawned back to back: what the processes alone cost

The ratio hatrain / floor at the same pace is the agent's own share of the gap (1.0: none).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.runtime_local import wrapped  # noqa: E402

from bench.contenders.hatrain import Agent  # noqa: E402
from bench.contenders.kit import Kit, gap  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

BURST = 10


def hatrain_burst(agent: Agent, kit: Kit) -> tuple[float, float]:
    """The gap between starts of a raw burst, and the mean time between its submits."""
    marks = [kit.file("hatrain-burst") for _ in range(BURST)]
    began = time.monotonic()
    jobs = agent.submit_raw_array(
        [{"bench_preprocess": "start", "bench_file": Kit.config_name(m)} for m in marks]
    )
    pace = (time.monotonic() - began) / BURST
    result = gap(marks)
    agent.wait_done(jobs)
    return result, pace


def floor_burst(kit: Kit, work: Path, every: float) -> float:
    """The gap between starts of the burst's processes, spawned `every` seconds apart."""
    marks, steps = [], []
    axolotl = str(kit.axolotl_venv / "bin" / "axolotl")
    for i in range(BURST):
        mark = kit.file("floor")
        config = work / f"{mark.name}.yml"
        config.write_text(f"bench_preprocess: start\nbench_file: {Kit.config_name(mark)}\n")
        env = {
            "PATH": "/usr/bin:/bin",
            "HATRAIN_EXIT": str(work / f"{mark.name}.exit"),
            "HATRAIN_SECRETS": str(work / "no-secrets"),
        }
        steps.append(
            subprocess.Popen(
                wrapped([axolotl, "preprocess", str(config)]),
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        )
        marks.append(mark)
        if i < BURST - 1:
            time.sleep(every)
    for step in steps:
        step.wait()
    return gap(marks)


def show(label: str, values: list[float]) -> str:
    return f"{label:18s} {statistics.median(values):6.1f} ms ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours: list[float] = []
    paces: list[float] = []
    same_pace: list[float] = []
    at_once: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hatrain-burst-floor-") as tmp:
        work = Path(tmp)
        kit = Kit(work / "kit", 10)
        sshd = start_sshd(work / "sshd")
        agent = Agent(work / "agent", kit, sshd, max_cpu_jobs=16)
        try:
            hatrain_burst(agent, kit)  # not counted: the agent's first steps
            for _ in range(args.rounds):
                result, pace = hatrain_burst(agent, kit)
                ours.append(1000 * result)
                paces.append(1000 * pace)
                same_pace.append(1000 * floor_burst(kit, work, pace))
                at_once.append(1000 * floor_burst(kit, work, 0.0))
        finally:
            agent.stop()
            sshd.stop()
    print(f"gap between starts, burst of {BURST}; median (range) of {args.rounds} rounds")
    print(show("hatrain (raw gRPC)", ours))
    print(show("floor, same pace", same_pace))
    print(show("floor, at once", at_once))
    print(f"hatrain's submits   {statistics.median(paces):6.1f} ms apart (median)")
    ratios = [o / f for o, f in zip(ours, same_pace, strict=True)]
    print(
        f"hatrain / floor at the same pace: {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f}); load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
