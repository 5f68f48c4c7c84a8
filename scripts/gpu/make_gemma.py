"""A randomly initialised Gemma 3 with gemma-3-270m's architecture, and a tokenizer for a config.

The seed's configs load google/gemma-3-270m-it or google/functiongemma-270m-it from the Hub,
which a host without network cannot reach. This builds a stand-in with the same architecture
(Gemma3ForCausalLM, 268,098,176 parameters, vocabulary 262,144) and a byte-level BPE tokenizer
learned from the training data, which carries every special token the config's chat template
and `special_tokens` use (<start_of_turn>, <end_of_turn>, <start_function_call>, ...), each as
one token.

    make_gemma.py tokenizer CONFIG DATA.jsonl OUT      # the tokenizer alone (small, portable)
    make_gemma.py model TOKENIZER_DIR OUT [--tiny]     # weights beside a copy of the tokenizer

--tiny builds a two-layer model of the same family for CPU runs. Nothing is downloaded.
"""

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

# Gemma's own control tokens, present in every Gemma tokenizer.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
_TEMPLATE_TOKEN = re.compile(r"<[a-z_/]+>")


def special_tokens(config: dict) -> list[str]:  # type: ignore[type-arg]
    """Gemma's control tokens plus those the config's chat template and special_tokens name."""
    found = list(GEMMA_SPECIALS)
    template = config.get("chat_template_jinja") or ""
    found += _TEMPLATE_TOKEN.findall(template)
    specials = config.get("special_tokens") or {}
    found += specials.get("eot_tokens") or []
    found += specials.get("additional_special_tokens") or []
    if specials.get("eos_token"):
        found.append(specials["eos_token"])
    return list(dict.fromkeys(found))


def texts(dataset: Path) -> Iterator[str]:
    with dataset.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            for message in row["messages"]:
                content = message.get("content")
                if isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict):
                            yield part.get("text") or json.dumps(part)
                elif content:
                    yield str(content)
                for call in message.get("tool_calls") or []:
                    yield json.dumps(call)


def make_tokenizer(config_path: Path, dataset: Path, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    specials = special_tokens(config)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8000,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts(dataset), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(out)
    print(f"tokenizer: {len(fast)} tokens, {len(specials)} special: {' '.join(specials)}")


def make_model(tokenizer_dir: Path, out: Path, tiny: bool) -> None:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # google/gemma-3-270m's config.json (its rope settings are the defaults); --tiny keeps the
    # family and shrinks the sizes.
    sizes = dict(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
    )
    if tiny:
        sizes.update(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            head_dim=16,
        )
    config = Gemma3TextConfig(
        **sizes,
        max_position_embeddings=32768,
        sliding_window=512,
        query_pre_attn_scalar=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    for name in tokenizer_dir.iterdir():
        if name.is_file():
            shutil.copy(name, out / name.name)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters in {out}")


def main() -> None:
    what, *args = sys.argv[1:]
    if what == "tokenizer":
        make_tokenizer(Path(args[0]), Path(args[1]), Path(args[2]))
    elif what == "model":
        make_model(Path(args[0]), Path(args[1]), tiny="--tiny" in args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
