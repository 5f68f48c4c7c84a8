"""Load a fetched LoRA/QLoRA adapter with peft on top of its base model, and show it is trained.

    load_adapter.py BASE_MODEL_DIR ADAPTER_DIR

Prints one JSON line: the adapter's type and rank, how many LoRA B matrices it holds and how many
moved away from their zero initialisation (what training changes), and how far the model's
logits on a sample prompt move from the base model's once the adapter is on.
"""

import json
import sys

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    base_dir, adapter_dir = sys.argv[1], sys.argv[2]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = PeftConfig.from_pretrained(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16).to(device)
    prompt = tokenizer("<start_of_turn>user\nTurn on the kitchen light<end_of_turn>\n")
    ids = torch.tensor([prompt["input_ids"]], device=device)
    with torch.no_grad():
        before = base(ids).logits.float()
    model = PeftModel.from_pretrained(base, adapter_dir).to(device)
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        after = model(ids).logits.float()
    print(
        json.dumps(
            {
                "peft_type": str(config.peft_type.value),
                "r": getattr(config, "r", None),
                "target_modules": sorted(getattr(config, "target_modules", None) or []),
                "lora_b_matrices": len(lora_b),
                "lora_b_trained": sum(1 for p in lora_b.values() if p.abs().max().item() > 0),
                "logits_max_abs_change": (after - before).abs().max().item(),
            }
        )
    )


if __name__ == "__main__":
    main()
