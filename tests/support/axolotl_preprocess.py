"""Run the real `axolotl preprocess` on many configs from one Python process (the Axolotl venv's).

Usage: python axolotl_preprocess.py CASES.json RESULTS.json HF_HOME

CASES.json is a list of {"id", "workdir", "config"}. Axolotl and its libraries are imported once;
each case then runs in a forked child, in its own working directory, through Axolotl's own command
line (`axolotl preprocess CONFIG --debug`, as the agent runs it). The working directory is on the
child's import path, as the agent puts a job's uploaded prompt-strategy modules on its PYTHONPATH.
A case is accepted when the child exits 0 having printed Axolotl's success line; otherwise its
verdict carries the exception line.
"""

import io
import json
import os
import sys
import traceback
from pathlib import Path

SUCCESS = "Success! Preprocessed data path"


def _last_exception_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) or head in ("KeyError", "StopIteration"):
            return line[:400]
    return lines[-1][:400] if lines else ""


def _child(case: dict[str, str]) -> None:
    os.chdir(case["workdir"])
    sys.path.insert(0, case["workdir"])
    log = Path(case["workdir"]) / "preprocess.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = sys.stdout
    from axolotl.cli.main import cli

    code = 0
    try:
        cli.main(["preprocess", case["config"], "--debug"], standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    os._exit(code)


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    os.environ.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "AXOLOTL_DO_NOT_TRACK": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HOME": sys.argv[3],
        }
    )
    # The heavy imports, once; logging set up here writes to fd 1, which each child redirects.
    import axolotl.cli.main
    import axolotl.cli.preprocess
    import axolotl.common.datasets
    import axolotl.loaders
    import axolotl.prompt_strategies.chat_template  # noqa: F401

    results = []
    for case in cases:
        pid = os.fork()
        if pid == 0:
            _child(case)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        text = (Path(case["workdir"]) / "preprocess.log").read_text(errors="replace")
        accepted = code == 0 and SUCCESS in text
        results.append(
            {
                "id": case["id"],
                "accepted": accepted,
                "exit_code": code,
                "error": "" if accepted else _last_exception_line(text),
            }
        )
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
