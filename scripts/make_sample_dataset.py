"""Write configs/demo/sample.jsonl: a small dataset in the home-llm JSONL shape (deterministic)."""

import json
import random
import sys
from pathlib import Path

DEVICES = [
    ("light.kitchen", "Kitchen Light"),
    ("light.bedroom", "Bedroom Lamp"),
    ("switch.fan", "Ceiling Fan"),
    ("light.porch", "Porch Light"),
    ("switch.heater", "Space Heater"),
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{verb} a device",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        },
    }
    for name, verb in (("HassTurnOn", "Turn on"), ("HassTurnOff", "Turn off"))
]


def example(rng: random.Random) -> dict[str, object]:
    entity, friendly = rng.choice(DEVICES)
    on = rng.random() < 0.5
    verb, tool = ("on", "HassTurnOn") if on else ("off", "HassTurnOff")
    state_lines = "\n".join(f"{e} '{f}' = {rng.choice(['on', 'off'])}" for e, f in DEVICES)
    return {
        "messages": [
            {
                "role": "system",
                "content": "You are a smart home assistant. Devices:\n" + state_lines,
            },
            {"role": "user", "content": [{"type": "text", "text": f"Turn {verb} the {friendly}"}]},
            {
                "role": "assistant",
                "content": f"Turning {verb} the {friendly}.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps({"name": friendly})},
                    }
                ],
                "train_on_turn": True,
            },
            {"role": "tool", "content": json.dumps({"success": True, "entity": entity})},
            {
                "role": "assistant",
                "content": f"The {friendly} is now {verb}.",
                "train_on_turn": True,
            },
        ],
        "tools": TOOLS,
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("configs/demo/sample.jsonl")
    rng = random.Random(7)
    with out.open("w", encoding="utf-8") as fh:
        for _ in range(64):
            fh.write(json.dumps(example(rng)) + "\n")


if __name__ == "__main__":
    main()
