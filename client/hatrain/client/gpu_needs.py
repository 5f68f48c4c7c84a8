"""Settings of an Axolotl config that can only run on a GPU.

A config with any of them, submitted with no GPU, fails once Axolotl starts (or trains on the
CPU for hours): `submit` then asks for one GPU when the host has GPUs, and warns when it has
none or `--gpus 0` was given.
"""

from typing import Any

# Boolean settings that need CUDA when true.
_NEED_TRUE = ("bf16", "fp16", "flash_attention", "flash_attn_cross_entropy", "flash_attn_rms_norm")


def gpu_only_settings(config: dict[str, Any]) -> list[str]:
    """The settings, as `key: value`, that tie the config to a GPU; empty if it can run on the
    CPU. `bf16: auto` is not one: Axolotl then follows the hardware."""
    found = [f"{key}: true" for key in _NEED_TRUE if _true(config.get(key))]
    optimizer = config.get("optimizer")
    if isinstance(optimizer, str) and ("bnb" in optimizer or "8bit" in optimizer):
        found.append(f"optimizer: {optimizer} (bitsandbytes)")
    if config.get("deepspeed"):
        found.append("deepspeed")
    return found


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
