"""The `axolotl` of the GPU host check: a real Hugging Face Trainer run of a tiny Llama on the GPU.

Axolotl itself cannot be installed on the check's machine (no network there); Axolotl trains
through this same Trainer, so its output (metric dicts, tqdm bars) has the shape the agent parses.
Called as `axolotl preprocess CONFIG --debug` or `axolotl train CONFIG`.
"""

import os
import sys
from pathlib import Path

import yaml


def main() -> int:
    step, config_path = sys.argv[1], sys.argv[2]
    config = yaml.safe_load(Path(config_path).read_text())
    if step == "preprocess":
        print("Success! Preprocessed data path: (nothing to prepare)", flush=True)
        return 0
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    props = torch.cuda.get_device_properties(0)
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    print(f"device_count={torch.cuda.device_count()} name={props.name} uuid=GPU-{props.uuid}")
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
        )
    )
    data = torch.randint(0, 256, (512, 64))
    rows = [{"input_ids": r, "labels": r} for r in data]
    steps = int(config["max_steps"])
    print(f"Maximum number of steps set at {steps}", flush=True)
    args = TrainingArguments(
        output_dir=config["output_dir"],
        max_steps=steps,
        logging_steps=1,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        bf16=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=False,
    )
    Trainer(model=model, args=args, train_dataset=rows).train()
    model.save_pretrained(config["output_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
