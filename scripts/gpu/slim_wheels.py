"""Rewrite wheels without files that Axolotl's runs here never open, to fit a size-capped transfer.

    slim_wheels.py SRC_DIR DEST_DIR

Dropped (each checked with an audit hook on every file opened and library loaded during
preprocess, full, LoRA and QLoRA training of the seed's configs; see docs/gpu.md):
- bitsandbytes' native libraries for CUDA 11.8-12.8, ROCm and XPU (the host's torch is CUDA 13);
- wandb's bin/ (wandb-core and its helpers run only when a wandb run starts: `use_wandb` unset);
- mistral_common's Tekken vocabularies (Mistral models only);
- pycountry's translations (locales/), botocore's AWS service models (data/: read only when an
  AWS client is made) and zstandard's cffi backend (the C backend is the one imported).
Each wheel's RECORD is rewritten to match; every other wheel is copied as it is.
"""

import csv
import io
import re
import shutil
import sys
import zipfile
from pathlib import Path

DROP = re.compile(
    r"^(bitsandbytes/libbitsandbytes_(cuda1[12]\d|rocm\d+|xpu\d+)\.so"
    r"|wandb/bin/"
    r"|mistral_common/data/tekken_\d+\.json"
    r"|pycountry/locales/"
    r"|botocore/data/"
    r"|zstandard/_cffi\.)"
)


def slim(wheel: Path, dest: Path) -> int:
    with zipfile.ZipFile(wheel) as source:
        names = source.namelist()
        dropped = {n for n in names if DROP.match(n)}
        if not dropped:
            shutil.copy(wheel, dest / wheel.name)
            return 0
        with zipfile.ZipFile(dest / wheel.name, "w", zipfile.ZIP_DEFLATED) as out:
            for name in names:
                if name in dropped:
                    continue
                data = source.read(name)
                if name.endswith(".dist-info/RECORD"):
                    rows = csv.reader(io.StringIO(data.decode()))
                    text = io.StringIO()
                    csv.writer(text, lineterminator="\n").writerows(
                        r for r in rows if r and r[0] not in dropped
                    )
                    data = text.getvalue().encode()
                out.writestr(source.getinfo(name), data)
    return len(dropped)


def main() -> None:
    src, dest = Path(sys.argv[1]), Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(src.glob("*.whl")):
        if count := slim(wheel, dest):
            print(f"{wheel.name}: {count} files left out")


if __name__ == "__main__":
    main()
