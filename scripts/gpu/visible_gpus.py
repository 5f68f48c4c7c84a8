"""Print the GPUs this process can see, by UUID, as CUDA itself enumerates them.

Run inside a job's step (the GPU check's `axolotl` calls it first): CUDA honours
CUDA_VISIBLE_DEVICES, so this is what the training process gets. The driver API is called
directly, which takes a fraction of a second where importing torch would take seconds.
"""

import ctypes
import os


def visible_uuids() -> list[str]:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return []  # no NVIDIA driver on this machine
    if cuda.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(count))
    uuids = []
    for ordinal in range(count.value):
        device = ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        raw = (ctypes.c_ubyte * 16)()
        cuda.cuDeviceGetUuid(raw, device)
        h = bytes(raw).hex()
        uuids.append(f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return uuids


if __name__ == "__main__":
    uuids = visible_uuids()
    print(
        f"visible GPUs: {len(uuids)}: {' '.join(uuids)} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})",
        flush=True,
    )
