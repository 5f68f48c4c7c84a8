"""The live view of a job in a real terminal (tmux) at 80x24 and 120x30, as a person sees it.

The real client follows a real job through a real sshd and agent; the job is the stand-in
`axolotl` replaying real Axolotl 0.19 output, told to stop before given points of it (while
preprocessing, loading the model, training, evaluating and saving) until the test has read the
screen there.
"""

import re
from pathlib import Path
from typing import Any

import pytest
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import CLIENT
from tests.support.harness import poll
from tests.support.tmux import Terminal
from tests.test_client_submit import make_project

# Where the job stops, in order: (the step, the text it stops before, which occurrence, the
# file that lets it go on).
STOPS = [
    ("preprocess", "Tokenizing Prompts", 2, "go-preprocess"),
    ("train", "Starting trainer", 1, "go-load"),
    ("train", "{'loss'", 6, "go-train"),
    ("train", "{'eval_loss'", 2, "go-eval"),
    ("train", "Writing model shards: 100%", 2, "go-save"),
]


def _eta_free(line: str) -> str:
    return re.sub(r"eta [\d:]+", "eta", line)


def _status(screen: list[str]) -> str:
    """The live view's status line: the last line with something on it ("" on a blank screen,
    which is what the terminal shows before the client has drawn anything)."""
    return next((line for line in reversed(screen) if line.strip()), "")


@pytest.mark.parametrize("size", [(80, 24), (120, 30)], ids=["80x24", "120x30"])
def test_the_live_view_says_what_the_job_is_doing(
    size: tuple[int, int],
    agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    tmp_path: Path,
) -> None:
    """At each point of a run the status line names what the job does (preprocessing and its
    stage, loading the model, the train step with loss, learning rate and ETA, the evaluation
    and its step, saving), fits the terminal's width, and the ETA reaches 0:00; the lines above
    say each step, evaluation and save once, and the job id in full."""
    width, height = size
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    standin = {"pause": [{"step": s, "before": t, "nth": n, "until": u} for s, t, n, u in STOPS]}
    project = make_project(tmp_path / "project", standin)
    terminal = Terminal(width, height)
    env = {k: v for k, v in client.env().items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "tmux-256color"
    try:
        terminal.start([CLIENT, "submit", "train/configs/mini.yml", "--follow"], env, project)
        job = poll(
            lambda: next(iter(stub.ListJobs(pb.ListJobsRequest()).jobs), None), 60, "the job"
        )
        run = Path(agent_config["data_root"]) / "jobs" / job.id / "run"

        def screen_when(what: str, check: Any) -> tuple[list[str], str]:
            def ready() -> list[str] | None:
                screen = terminal.screen()
                return screen if check(_status(screen)) else None

            try:
                return poll(ready, 60, what, every=0.2), terminal.text()
            except AssertionError:
                screen = "\n".join(terminal.screen())
                raise AssertionError(f"{what}; the screen:\n{screen}") from None

        def release(name: str) -> None:
            (run / name).touch()

        screens = {}
        screens["preprocess"] = screen_when(
            "preprocessing",
            lambda s: re.match(r"preprocessing: Tokenizing Prompts ━+ 0/64$", s),
        )
        release("go-preprocess")
        screens["load"] = screen_when(
            "loading the model", lambda s: re.match(r"loading the model ━+ 20/20$", s)
        )
        release("go-load")
        screens["train"] = screen_when(
            "the 5th train step",
            lambda s: s.startswith("training") and "\nstep 5/20: loss" in terminal.text(),
        )
        release("go-train")
        screens["eval"] = screen_when(
            "the evaluation at step 10",
            lambda s: re.match(r"evaluating at step 10/20 ━+ 0/4 ", s),
        )
        release("go-eval")
        screens["save"] = screen_when(
            "saving", lambda s: re.match(r"saving the trained model ━+ 0/1 ", s)
        )
        release("go-save")
        poll(terminal.exited, 60, "the client to exit once the job ended", every=0.2)
        screens["end"] = terminal.screen(), terminal.text()
    finally:
        terminal.close()

    for name, (screen, _) in screens.items():
        assert len(screen) <= height, name
        assert all(len(line) <= width for line in screen), (name, screen)
        if name != "preprocess":  # once training, no bar of the preprocess step is left
            assert "Saving the dataset" not in _status(screen), (name, screen)
    # The status line is drawn to fit: never cut short, never wrapped by the terminal.
    for name, (screen, text) in screens.items():
        if name != "end":
            assert "…" not in _status(screen), (name, screen)
            unwrapped = text.splitlines()[-1]  # read a moment later: the ETA may have ticked
            assert _eta_free(_status(screen)) == _eta_free(unwrapped), (name, screen, unwrapped)

    screen, text = screens["preprocess"]
    assert f"job {job.id} queued on gpu1: position 1, 0 GPUs" in text  # the id in full
    assert "[preprocessing]" in screen
    assert re.search(r"━ \d+/64$", _status(screen)), screen

    screen, text = screens["load"]
    assert re.search(r"^\[training\]\nloading the dataset\nloading the model\n", text, re.M)

    screen, text = screens["train"]
    status = _status(screen)
    assert re.match(r"training ━+ step 5/20 loss \d\.\d+ lr [\d.e-]+ eta \d:\d\d$", status)
    assert re.search(r"^step \d+/20: loss \d\.\d+, lr [\d.e-]+, .*eta \d:\d\d$", text, re.M)

    screen, text = screens["eval"]
    status = _status(screen)
    assert re.match(r"evaluating at step 10/20 ━+ \d/4 loss .* eta \d:\d\d$", status), status

    screen, text = screens["save"]
    assert re.match(r"saving the trained model ━+ 0/1 .*eta 0:00$", _status(screen)), screen
    assert "\nsaving checkpoint-20\n" in text
    assert re.search(r"^eval at step 10/20: eval_loss 5\.\d+, eval_ppl", text, re.M), text
    assert re.search(r"^eval at step 20/20: eval_loss 4\.\d+, eval_ppl", text, re.M), text
    assert re.search(r"^step 20/20: loss 4\.\d+, .*eta 0:00$", text, re.M), text
    assert re.search(r"^summary: train_loss 5\.\d+$", text, re.M), text

    screen, text = screens["end"]
    assert f"job {job.id} on gpu1: succeeded" in text
    assert re.search(r"^  elapsed   \d+:\d\d$", text, re.M), text
    assert "  progress" not in text  # no bar of a job that has ended
    for once in ("saving checkpoint-20", "saving the trained model\n", "eval at step 20/20"):
        assert text.count(once) <= 1, (once, text)
