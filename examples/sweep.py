"""A learning-rate sweep from a script: one job per rate, and one plot of their loss curves.

    python examples/sweep.py configs/demo/tiny-llama-cpu.yml --out sweep.png
    python examples/sweep.py train/configs/gemma3-270m.yml --lr 1e-5 2e-5 5e-5 --gpus 1

It uses the hosts of your client config (~/.config/hatrain/client.yml, or
$HATRAIN_CLIENT_CONFIG), like hatrain-client does. Each job is the config with its
`learning_rate` changed, all queued in one call; the three runs train side by side if the host
has room.
"""

import argparse
import sys
from pathlib import Path

import matplotlib
import yaml
from hatrain.client import Client, Job, JobState

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def submit_sweep(client: Client, config: Path, rates: list[float], gpus: int) -> dict[float, Job]:
    """One job per learning rate, queued in one call (all of them, or none if one is refused).
    Each variant of the config is written beside it, so that its relative paths mean what they
    mean in the original, and removed once submitted."""
    base = yaml.safe_load(config.read_text())
    variants = [config.with_name(f".{config.stem}.lr-{rate:g}.yml") for rate in rates]
    try:
        for rate, variant in zip(rates, variants, strict=True):
            variant.write_text(yaml.safe_dump({**base, "learning_rate": rate}, sort_keys=False))
        jobs = client.submit_all(
            variants, gpus=gpus, names=[f"{config.stem} lr={rate:g}" for rate in rates]
        )
    finally:
        for variant in variants:
            variant.unlink(missing_ok=True)
    return dict(zip(rates, jobs, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="an Axolotl config")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("sweep.png"))
    args = parser.parse_args()

    with Client() as client:
        jobs = submit_sweep(client, args.config, args.lr, args.gpus)
        for rate, job in jobs.items():
            print(f"lr {rate:g}: job {job.id} on {job.host}")
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for rate, job in jobs.items():
            done = client.wait(job.id, host=job.host)
            if done.state != JobState.SUCCEEDED:
                print(f"lr {rate:g}: job {job.id} {done.state.value}: {done.hint}", file=sys.stderr)
                return 1
            train = client.curves(job.id, host=job.host).train
            steps, losses = zip(*train, strict=True)
            ax.plot(steps, losses, label=f"lr {rate:g}")
            print(f"lr {rate:g}: final loss {losses[-1]:.4f} after {steps[-1]} steps")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_title(f"{args.config.stem}: learning-rate sweep")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
