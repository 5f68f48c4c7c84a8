"""hatrain's gap between starts in a burst, against the same processes spawned straight from one
Python thread with no agent at all, in interleaved rounds.

    python bench/burst_floor.py [--rounds 5]

bench/peers.py submits a burst of 10 jobs in one SubmitJobs call (as Slurm's is one job array)
and times the spread of their starts. Each round here runs, in turn:

  hatrain   that burst, raw gRPC, into `hatrain-agent serve` with the local runtime
  floor     the same 10 step processes spawned back to back from one Python thread, each the
            command line the local runtime runs for a step of a job without secrets: its
            wrapper, setpriv to the job's user and the peer kit's `axolotl`, which writes the
            start time.
            What the processes cost with no scheduler at all.

The ratio hatrain / floor is the agent's own share of the gap (1.0: none; below 1, the agent's
runner threads spawn faster than one thread back to back).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.accounts import of_uid  # noqa: E402
from hatrain.agent.confinement import run_as  # noqa: E402
from hatrain.agent.runtime_local import wrapped  # noqa: E402

from bench.contenders.hatrain import Agent  # noqa: E402
from bench.contenders.kit import Kit, gap  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

BURST = 10


def hatrain_burst(agent: Agent, kit: Kit) -> float:
    """The gap between starts of a raw burst: one SubmitJobs call of BURST jobs."""
    marks = [kit.file("hatrain-burst") for _ in range(BURST)]
    jobs = agent.submit_raw_array(
        [{"bench_preprocess": "start", "bench_file": Kit.config_name(m)} for m in marks]
    )
    result = gap(marks)
    agent.wait_done(jobs)
    return result


def floor_burst(kit: Kit, work: Path) -> float:
    """The gap between starts of the burst's processes, spawned back to back."""
    marks, steps = [], []
    axolotl = str(kit.axolotl_venv / "bin" / "axolotl")
    owner = run_as(of_uid(os.getuid()))
    for _ in range(BURST):
        mark = kit.file("floor")
        config = work / f"{mark.name}.yml"
        config.write_text(f"bench_preprocess: start\nbench_file: {Kit.config_name(mark)}\n")
        env = {
            "PATH": "/usr/bin:/bin",
            "HATRAIN_EXIT": str(work / f"{mark.name}.exit"),
        }
        steps.append(
            subprocess.Popen(
                wrapped([*owner, axolotl, "preprocess", str(config)]),
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        )
        marks.append(mark)
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
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hatrain-burst-floor-") as tmp:
        work = Path(tmp)
        kit = Kit(work / "kit", 10)
        sshd = start_sshd(work / "sshd")
        agent = Agent(work / "agent", kit, sshd, max_cpu_jobs=16)
        try:
            hatrain_burst(agent, kit)  # not counted: the agent's first steps
            for _ in range(args.rounds):
                ours.append(1000 * hatrain_burst(agent, kit))
                floor.append(1000 * floor_burst(kit, work))
        finally:
            agent.stop()
            sshd.stop()
    print(f"gap between starts, burst of {BURST}; median (range) of {args.rounds} rounds")
    print(show("hatrain (raw gRPC)", ours))
    print(show("floor", floor))
    ratios = [o / f for o, f in zip(ours, floor, strict=True)]
    print(
        f"hatrain / floor: {statistics.median(ratios):.2f}x "
        f"({min(ratios):.2f}-{max(ratios):.2f}); load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
