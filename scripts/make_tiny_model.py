"""Build a tiny, randomly initialised Llama and a byte-level BPE tokenizer trained on a dataset.

Run with the Axolotl virtualenv's Python: make_tiny_model.py DATASET.jsonl OUT_DIR
Nothing is downloaded: the tokenizer is learned from the dataset's own text.
"""

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<|pad|>", "<|begin|>", "<|end|>", "<|unk|>"]


def texts(dataset: Path):  # type: ignore[no-untyped-def]
    for line in dataset.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for message in row["messages"]:
            content = message["content"]
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
            yield f"<|{message['role']}|>{content}"
            for call in message.get("tool_calls", []):
                yield f"<tool>{call['function']['name']} {call['function']['arguments']}</tool>"


def main() -> None:
    dataset, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts(dataset), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )
    fast.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)


if __name__ == "__main__":
    main()
