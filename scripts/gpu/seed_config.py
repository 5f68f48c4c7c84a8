"""Write a seed config (configs/home-llm/) as it can run on a host without network.

The only changes: `base_model` becomes a local directory, `max_steps` caps the run, and
`flash_attention` gives way to SDPA (flash-attn has no binary wheel). Every other setting stays as
the user has it. `--adapter lora|qlora` writes the seed's other two approaches on the same config:
LoRA, and QLoRA (LoRA on the base loaded in 4 bits).

    seed_config.py SEED.yml OUT.yml --base-model DIR --max-steps N [--adapter lora|qlora]
                   [--set KEY=YAML]...

--set overrides a key (for a CPU rehearsal only, e.g. --set bf16=false).
"""

import argparse
from pathlib import Path
from typing import Any

import yaml


def _block_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Multi-line strings (the chat templates) as literal blocks, as the seed writes them."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


yaml.SafeDumper.add_representer(str, _block_text)

LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_linear": True}


def variant(
    seed: dict[str, Any], base_model: str, max_steps: int, adapter: str | None
) -> dict[str, Any]:
    config = dict(seed)
    config["base_model"] = base_model
    if config.get("flash_attention"):
        config["flash_attention"] = False
        config["sdp_attention"] = True
    config["max_steps"] = max_steps
    if adapter:
        config["adapter"] = adapter
        config.update(LORA)
        if adapter == "qlora":
            config["load_in_4bit"] = True
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("seed", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--adapter", choices=["lora", "qlora"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML")
    args = parser.parse_args()
    seed = yaml.safe_load(args.seed.read_text(encoding="utf-8"))
    config = variant(seed, args.base_model, args.max_steps, args.adapter)
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(config, sort_keys=False, width=1000), encoding="utf-8")


if __name__ == "__main__":
    main()
