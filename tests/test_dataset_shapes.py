"""Dataset shapes and path rules as Axolotl 0.19 reads them, seen through the real hatrain-client.

The data of the first tests is home-llm's own generator output (tests/data/home-llm/SOURCE.md).
Whether Axolotl itself agrees with each verdict is tests/test_axolotl_agreement.py.
"""

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatrain.client.axolotl_config import analyse, finalize
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import CLIENT
from tests.support.harness import TERMINAL, wait_state

REPO = Path(__file__).resolve().parent.parent
HOME_LLM = REPO / "tests" / "data" / "home-llm"
SEED = REPO / "configs" / "home-llm"


def client(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """hatrain-client as a user runs it (check-dataset needs no host)."""
    return subprocess.run(
        [CLIENT, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def home_llm(tmp_path: Path, fmt: str) -> Path:
    """The generator's output for one --tool-response-format, as a .jsonl file."""
    out = tmp_path / f"home-llm-{fmt}.jsonl"
    out.write_bytes(gzip.decompress((HOME_LLM / f"sample-{fmt}.jsonl.gz").read_bytes()))
    return out


def test_home_llm_generator_output_passes_check_dataset(tmp_path: Path) -> None:
    """Both tool-response formats of home-llm's generator pass check-dataset; read through the
    seed's configs, the gemma3 template takes both, and the functiongemma template takes its own
    format and refuses the text one with the template's own message, naming line and message."""
    fg, text = home_llm(tmp_path, "functiongemma"), home_llm(tmp_path, "text")
    assert sum(1 for _ in fg.open()) == sum(1 for _ in text.open()) == 155
    plain = client("check-dataset", str(fg), str(text), cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout
    assert f"{fg}: ok (155 records)" in plain.stdout
    assert f"{text}: ok (155 records)" in plain.stdout

    gemma3 = SEED / "gemma3-270m.yml"
    both = client("check-dataset", "-a", str(gemma3), str(fg), str(text), cwd=tmp_path)
    assert both.returncode == 0, both.stdout
    assert both.stdout.count("ok (155 records)") == 2

    functiongemma = SEED / "functiongemma-270m.yml"
    own = client("check-dataset", "-a", str(functiongemma), str(fg), cwd=tmp_path)
    assert own.returncode == 0, own.stdout
    other = client("check-dataset", "-a", str(functiongemma), str(text), cwd=tmp_path)
    assert other.returncode == 65
    first = next(json.loads(line) for line in text.open())
    tool = next(i for i, m in enumerate(first["messages"]) if m["role"] == "tool")
    assert f"{text}:1: messages[{tool}]: the chat template refuses this conversation" in (
        other.stdout
    )
    assert "Invalid tool response: 'name' must be provided." in other.stdout


@pytest.mark.parametrize("name", ["gemma3-270m.yml", "functiongemma-270m.yml"])
def test_seed_configs_with_home_llm_data_reach_the_agent(
    name: str,
    agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    tmp_path: Path,
) -> None:
    """`submit` of the seed's config, unchanged, in a home-llm checkout whose data/output holds
    the generator's functiongemma output: the job reaches the agent with that very file."""
    stub, agent = start_agent(agent_config)
    runner = client_for(agent.socket)
    checkout = tmp_path / "home-llm"
    (checkout / "train" / "configs").mkdir(parents=True)
    (checkout / "data" / "output").mkdir(parents=True)
    shutil.copy(SEED / name, checkout / "train" / "configs" / name)
    data = checkout / "data" / "output" / "sample.jsonl"
    data.write_bytes(home_llm(tmp_path, "functiongemma").read_bytes())

    submitted = runner.json("submit", f"train/configs/{name}", "--detach", cwd=checkout)
    job = wait_state(stub, submitted["id"], TERMINAL)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.spec.name == Path(name).stem
    on_host = Path(agent_config["data_root"]) / "jobs" / submitted["id"] / "datasets"
    config = yaml.safe_load((on_host.parent / "configs" / name).read_text())
    assert config["datasets"][0]["path"] == "/workspace/data/datasets/sample.jsonl"
    assert config["base_model"] == yaml.safe_load((SEED / name).read_text())["base_model"]
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert hashlib.sha256((on_host / "sample.jsonl").read_bytes()).hexdigest() == digest


def write(root: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False))
    return root


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


CHAT = jsonl(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "hey"}]},
)


def config(**changes: Any) -> dict[str, Any]:
    return {
        "base_model": "google/gemma-3-270m-it",
        "chat_template": "chatml",
        "datasets": [{"path": "data/chat.jsonl", "type": "chat_template"}],
        "output_dir": "./outputs/run",
        **changes,
    }


def placed(analysis: Any) -> dict[str, Path]:
    return {f.name: f.path for f in analysis.files}


def test_relative_paths_resolve_from_the_working_directory_then_the_config(
    tmp_path: Path,
) -> None:
    """A relative path is read from the directory the client runs in (Axolotl's working
    directory), else beside the config; found in neither, the finding names both places."""
    project = write(
        tmp_path / "project",
        {
            "data/chat.jsonl": CHAT,
            "configs/run.yml": config(
                datasets=[
                    {"path": "data/chat.jsonl", "type": "chat_template"},
                    {"path": "beside.jsonl", "type": "chat_template"},
                ]
            ),
            "configs/beside.jsonl": CHAT,
        },
    )
    analysis = analyse(project / "configs" / "run.yml", workdir=project)
    assert analysis.findings == []
    assert placed(analysis) == {
        "chat.jsonl": (project / "data" / "chat.jsonl").resolve(),
        "beside.jsonl": (project / "configs" / "beside.jsonl").resolve(),
    }
    other = tmp_path / "elsewhere"
    other.mkdir()
    result = client("check-dataset", "-a", str(project / "configs" / "run.yml"), cwd=other)
    assert result.returncode == 65
    assert (
        f"{project / 'configs' / 'run.yml'}:4: datasets[0].path: data/chat.jsonl: no such file "
        f"or directory (looked in {other / 'data/chat.jsonl'} and "
        f"{project / 'configs' / 'data/chat.jsonl'})"
    ) in result.stdout
    assert "fix: relative paths are read from the directory you run hatrain-client in" in (
        result.stdout
    )
    assert "datasets[1].path: Axolotl's built-in chat template 'chatml' is not rendered here" in (
        result.stdout
    )


def test_directory_dataset_uploads_only_what_the_loader_reads_and_checks_each_file(
    tmp_path: Path,
) -> None:
    """A dataset directory: only the files of the loader its extensions pick are uploaded,
    never .cache/ or notes; each chat file inside is checked, a bad one by its own path."""
    project = write(
        tmp_path,
        {
            "run.yml": config(datasets=[{"path": "corpus", "type": "chat_template"}]),
            "corpus/a.jsonl": CHAT,
            "corpus/part/b.jsonl": CHAT,
            "corpus/.cache/stale.jsonl": "{broken\n",
            "corpus/notes.txt": "about the data\n",
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert sorted(placed(analysis)) == ["corpus/a.jsonl", "corpus/part/b.jsonl"]
    assert analysis.config["datasets"][0]["path"] == "/workspace/data/datasets/corpus"
    assert [c.path.name for c in analysis.checks] == ["a.jsonl", "b.jsonl"]
    (project / "corpus" / "part" / "b.jsonl").write_text(CHAT + '{"messages": []}\n')
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 65
    assert f"{project / 'corpus/part/b.jsonl'}:3: messages: the conversation is empty" in (
        result.stdout
    )


def test_data_files_of_a_directory_are_read_from_the_working_directory(tmp_path: Path) -> None:
    """`data_files` beside a local directory path are relative to the working directory (as
    `datasets` reads them); they are uploaded and rewritten, and a wrong one is flagged."""
    project = write(
        tmp_path,
        {
            "run.yml": config(
                datasets=[{"path": "d", "data_files": ["d/a.jsonl"], "type": "chat_template"}]
            ),
            "d/a.jsonl": CHAT,
            "d/ignored.jsonl": CHAT,
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert list(placed(analysis)) == ["d/a.jsonl"]
    entry = analysis.config["datasets"][0]
    assert entry["data_files"] == ["/workspace/data/datasets/d/a.jsonl"]
    assert entry["path"] == "/workspace/data/datasets/d"
    write(
        project,
        {
            "run.yml": config(
                datasets=[{"path": "d", "data_files": ["a.jsonl"], "type": "chat_template"}]
            )
        },
    )
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 65
    assert "datasets[0].data_files[0]: a.jsonl: no such file (looked in" in result.stdout


def test_model_checkpoint_adapter_and_deepspeed_paths(tmp_path: Path) -> None:
    """lora_model_dir "" means none and uploads nothing; a checkpoint folder and a deepspeed
    file are uploaded and rewritten; a missing checkpoint or deepspeed file is flagged."""
    project = write(
        tmp_path,
        {
            "run.yml": config(
                lora_model_dir="",
                resume_from_checkpoint="outputs/checkpoint-10",
                deepspeed="ds/zero2.json",
            ),
            "data/chat.jsonl": CHAT,
            "outputs/checkpoint-10/trainer_state.json": "{}",
            "ds/zero2.json": '{"zero_optimization": {"stage": 2}}',
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert analysis.findings == []
    assert sorted(placed(analysis)) == [
        "chat.jsonl",
        "checkpoint-10/trainer_state.json",
        "zero2.json",
    ]
    assert analysis.config["lora_model_dir"] == ""
    assert analysis.config["resume_from_checkpoint"] == "/workspace/data/datasets/checkpoint-10"
    assert analysis.config["deepspeed"] == "/workspace/data/datasets/zero2.json"
    write(
        project,
        {"run.yml": config(resume_from_checkpoint="outputs/gone", deepspeed="ds/zero3.json")},
    )
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 65
    assert "resume_from_checkpoint: outputs/gone: no such directory (looked in" in result.stdout
    assert "deepspeed: ds/zero3.json: no such file (looked in" in result.stdout


def test_pretraining_dataset_and_chat_template_file_are_uploaded(tmp_path: Path) -> None:
    """A local pretraining_dataset and a chat_template_jinja file are uploaded and rewritten;
    the template is the one the chat data is rendered with."""
    project = write(
        tmp_path,
        {
            "run.yml": config(
                chat_template="jinja",
                chat_template_jinja="templates/chat.jinja",
                pretraining_dataset=[{"path": "corpus.jsonl", "type": "pretrain"}],
            ),
            "data/chat.jsonl": CHAT,
            "corpus.jsonl": jsonl({"text": "one"}, {"text": "two"}),
            "templates/chat.jinja": (REPO / "configs" / "demo" / "chat_template.jinja").read_text(),
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert analysis.findings == []
    assert analysis.config["pretraining_dataset"][0]["path"].endswith("/corpus.jsonl")
    assert analysis.config["chat_template_jinja"] == "/workspace/data/datasets/chat.jinja"
    assert analysis.checks[0].reading.template is not None


def test_a_datasets_own_template_file_renders_its_data(tmp_path: Path) -> None:
    """A dataset entry's own chat_template: jinja with a template file: the data is rendered
    through that file's template (here one that refuses it), and the file is uploaded."""
    refusing = "{{ raise_exception('this template takes no data') }}"
    project = write(
        tmp_path,
        {
            "run.yml": config(
                datasets=[
                    {
                        "path": "data/chat.jsonl",
                        "type": "chat_template",
                        "chat_template": "jinja",
                        "chat_template_jinja": "strict.jinja",
                    }
                ]
            ),
            "data/chat.jsonl": CHAT,
            "strict.jinja": refusing,
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert sorted(placed(analysis)) == ["chat.jsonl", "strict.jinja"]
    assert analysis.config["datasets"][0]["chat_template_jinja"].endswith("/strict.jinja")
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 65
    assert "TemplateError: this template takes no data" in result.stdout


def test_files_not_read_as_chat_are_uploaded_unchecked(tmp_path: Path) -> None:
    """Parquet files, and preference data of an `rl:` config, are uploaded and left to Axolotl."""
    project = write(
        tmp_path,
        {
            "run.yml": config(
                rl="dpo",
                datasets=[
                    {"path": "d.parquet", "type": "chat_template"},
                    {"path": "prefs.jsonl", "type": "chat_template.default"},
                ],
            ),
            "d.parquet": b"PAR1 not really",
            "prefs.jsonl": '{"prompt": "a", "chosen": "b", "rejected": "c"}\n',
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert analysis.findings == [] and analysis.checks == []
    assert sorted(placed(analysis)) == ["d.parquet", "prefs.jsonl"]


def test_remote_and_hub_datasets_pass_through_and_are_named(tmp_path: Path) -> None:
    """s3://, gs://, gcs://, az://, oci:// and https:// datasets and Hub ids are left to Axolotl
    (not uploaded) and said so; http:// is refused, as Axolotl cannot load it."""
    remote = ["s3://b/x.jsonl", "gs://b/x.jsonl", "gcs://b/x", "az://c/x", "oci://b/x"]
    remote += ["https://example.com/x.jsonl", "org/dataset"]
    project = write(
        tmp_path,
        {"run.yml": config(datasets=[{"path": p, "type": "chat_template"} for p in remote])},
    )
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 0, result.stdout
    assert "note: datasets[0].path: s3://b/x.jsonl: remote, loaded by Axolotl itself" in (
        result.stdout
    )
    assert "no local chat_template dataset to check" in result.stdout
    analysis = analyse(project / "run.yml", workdir=project)
    assert analysis.findings == [] and analysis.files == []
    assert [n.split(":", 1)[0] for n in analysis.notes] == [
        f"datasets[{i}].path" for i in range(len(remote))
    ]
    assert all("remote, loaded by Axolotl itself" in n for n in analysis.notes[:-1])
    assert "Hugging Face Hub dataset" in analysis.notes[-1]
    write(project, {"run.yml": config(datasets=[{"path": "http://example.com/x.jsonl"}])})
    refused = analyse(project / "run.yml", workdir=project).findings
    assert [f.message for f in refused] == [
        "http://example.com/x.jsonl: Axolotl loads dataset URLs only over https://"
    ]


def test_custom_type_modules_are_uploaded_where_the_job_imports_them(tmp_path: Path) -> None:
    """A `type:` naming the user's own module beside the config is uploaded under python/ (on
    the job's PYTHONPATH); a supervised type Axolotl would never import is flagged."""
    project = write(
        tmp_path,
        {
            "run.yml": config(datasets=[{"path": "data/qa.jsonl", "type": "my_formats.qa"}]),
            "data/qa.jsonl": jsonl({"q": "a", "a": "b"}, {"q": "c", "a": "d"}),
            "my_formats/__init__.py": "",
            "my_formats/qa.py": "def load(tokenizer, cfg, ds_cfg=None):\n    return None\n",
        },
    )
    analysis = analyse(project / "run.yml", workdir=project)
    assert analysis.findings == []
    assert sorted(placed(analysis)) == [
        "python/my_formats/__init__.py",
        "python/my_formats/qa.py",
        "qa.jsonl",
    ]
    assert analysis.config["datasets"][0]["type"] == "my_formats.qa"
    assert analysis.checks == []  # not a chat dataset
    write(
        project,
        {"run.yml": config(datasets=[{"path": "data/qa.jsonl", "type": "my_formats.load"}])},
    )
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert "datasets[0].type: my_formats.load: Axolotl looks up a type ending in .load" in (
        result.stdout
    )
    text = finalize(analysis, {p: "0" * 64 for p in placed(analysis).values()}, "run")
    assert yaml.safe_load(text)["datasets"][0]["path"] == "/workspace/data/datasets/qa.jsonl"


@pytest.mark.parametrize(
    ("rows", "where", "message"),
    [
        ([{"conversations": [{"from": "human", "value": "hi"}]}], "messages", "missing"),
        ([{"messages": []}], "messages", "the conversation is empty"),
        ([{"messages": [{"content": "x"}]}], "messages[0].role", "the first message has no role"),
        (
            [{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}],
            "messages[0].content[0].text",
            "expected text, got a number",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},
                    ],
                    "tools": {"name": "f"},
                }
            ],
            "tools",
            "expected a list of tool definitions, got an object",
        ),
    ],
)
def test_each_refusal_names_file_line_and_field(
    tmp_path: Path, rows: list[Any], where: str, message: str
) -> None:
    """What Axolotl's reading refuses is reported with the file, the line and the field."""
    data = tmp_path / "d.jsonl"
    data.write_text(CHAT + jsonl(*rows))
    result = client("check-dataset", str(data), cwd=tmp_path)
    assert result.returncode == 65
    assert f"{data}:3: {where}: " in result.stdout and message in result.stdout


def test_shapes_axolotl_accepts_are_not_refused(tmp_path: Path) -> None:
    """Tool calls without content, arguments as an object or a JSON string, tool results as
    parts of any shape, roles beyond the four, messages as a JSON string, a .jsonl holding one
    JSON array, and ShareGPT-style conversations through a mapping."""
    rows = [
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "lights on"}]},
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "on", "arguments": {}}}],
                },
                {"role": "ipython", "content": [{"name": "on", "response": {"ok": True}}]},
                {
                    "role": "assistant",
                    "content": "done",
                    "tool_calls": [{"function": {"name": "on", "arguments": "{}"}}],
                },
                {"role": "tool", "content": {"name": "on", "response": "ok"}},
            ]
        },
        {"messages": json.dumps([{"role": "user", "content": "a"}])},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(rows, indent=2))
    result = client("check-dataset", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert f"{data}: ok (2 records)" in result.stdout
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(
        jsonl({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})
        * 2
    )
    settings = tmp_path / "run.yml"
    settings.write_text(
        yaml.safe_dump(
            config(
                datasets=[
                    {
                        "path": "sharegpt.jsonl",
                        "type": "chat_template",
                        "field_messages": "conversations",
                        "message_property_mappings": {"role": "from", "content": "value"},
                    }
                ]
            )
        )
    )
    mapped = client("check-dataset", "-a", str(settings), cwd=tmp_path)
    assert mapped.returncode == 0, mapped.stdout
    unmapped = client("check-dataset", str(sharegpt), cwd=tmp_path)
    assert "conversations" in unmapped.stdout and unmapped.returncode == 65


def test_images_of_a_multimodal_dataset_are_uploaded_and_pointed_at(tmp_path: Path) -> None:
    """With a processor (a multimodal config), the image files the conversations name are
    uploaded, and the dataset goes up as a copy naming their container paths; an image that is
    nowhere is a finding with its line and field."""
    part = {"type": "image", "path": "images/cat.png"}
    rows = [
        {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "what?"}]}]},
        {"messages": [{"role": "user", "content": "a dog"}], "images": ["images/dog.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image", "url": "https://x/y.png"}]}]},
    ]
    project = write(
        tmp_path,
        {
            "run.yml": config(
                processor_type="AutoProcessor",
                datasets=[{"path": "mm.jsonl", "type": "chat_template"}],
            ),
            "mm.jsonl": jsonl(*rows),
            "images/cat.png": b"\x89PNG cat",
            "images/dog.png": b"\x89PNG dog",
        },
    )
    analysis = analyse(project / "run.yml", workdir=project, scratch=tmp_path / "copies")
    assert analysis.findings == []
    files = placed(analysis)
    assert sorted(files) == ["images/cat.png", "images/dog.png", "mm.jsonl"]
    sent = [json.loads(line) for line in files["mm.jsonl"].read_text().splitlines()]
    assert sent[0]["messages"][0]["content"][0]["path"] == "/workspace/data/datasets/images/cat.png"
    assert sent[1]["images"] == ["/workspace/data/datasets/images/dog.png"]
    assert sent[2] == rows[2]  # a URL is Axolotl's to load
    assert (project / "mm.jsonl").read_text() == jsonl(*rows)  # the user's file is untouched

    (project / "images" / "dog.png").unlink()
    result = client("check-dataset", "-a", "run.yml", cwd=project)
    assert result.returncode == 65
    assert f"{project / 'mm.jsonl'}:2: images[0]: images/dog.png: no such image (looked in" in (
        result.stdout
    )


def test_submit_summary_says_what_is_left_to_axolotl(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """The submit summary names the remote dataset it left alone; only the local one is sent."""
    stub, agent = start_agent(agent_config)
    runner = client_for(agent.socket)
    project = write(
        tmp_path / "project",
        {
            "data/chat.jsonl": CHAT,
            "run.yml": config(
                datasets=[
                    {"path": "data/chat.jsonl", "type": "chat_template"},
                    {"path": "s3://team-bucket/more.jsonl", "type": "chat_template"},
                ]
            ),
        },
    )
    result = runner.run("submit", "run.yml", "--detach", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "1 sent" in result.stdout
    assert (
        "note: datasets[1].path: s3://team-bucket/more.jsonl: remote, loaded by Axolotl itself"
        in result.stdout
    )
    job_id = result.stdout.split()[1]
    assert wait_state(stub, job_id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
