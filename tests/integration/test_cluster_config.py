"""The cluster entry points, offline: ray_cluster.yaml (AWS) and cluster/local.yaml pass Ray's
own launcher validation without any cloud call, install torch before the package, bind the
dashboard to 127.0.0.1, and the local start/stop scripts reject bad input without starting Ray.

Where it sits: the outermost layer (`ray up` / `ray submit` -> seem_ray/tune.py on the head).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
AWS_YAML = REPO / "ray_cluster.yaml"
LOCAL_YAML = REPO / "cluster" / "local.yaml"
START = REPO / "cluster" / "start_local.sh"
STOP = REPO / "cluster" / "stop_local.sh"
GPU_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.")


def load(path: Path) -> dict[str, Any]:
    """What the launcher reads: plain YAML through yaml.safe_load (no Python tags)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def prepared(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Ray's own offline preparation + validation of a cluster YAML (no cloud calls possible)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # Any attempt to reach AWS would import boto3: make that fail loudly, and hide credentials.
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "botocore", None)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    config = prepare_config(load(path))
    validate_config(config)
    return config


def torch_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, deps
    return pins[0].replace(" ", "")


def all_commands(config: dict[str, Any]) -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    return [cmd for key in keys for cmd in config.get(key, [])]


def package_mount(config: dict[str, Any]) -> str:
    """The remote folder that file_mounts fills with this repo ("." on the launching side)."""
    mounts = [remote for remote, local in config["file_mounts"].items() if local in (".", "./")]
    assert len(mounts) == 1, config["file_mounts"]
    return mounts[0]


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_ray_validates_the_config_offline(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = prepared(path, monkeypatch)
    assert config["provider"]["type"] == ("aws" if path == AWS_YAML else "local")
    assert "!!" not in path.read_text(), "cluster YAML must stay plain (yaml.safe_load)"


def test_validation_really_checks_something(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Guard against a validator that accepts anything: a misspelt top-level key must fail."""
    import jsonschema

    bad = load(AWS_YAML)
    bad["setup_comands"] = bad.pop("setup_commands")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(jsonschema.ValidationError):
        prepared(path, monkeypatch)


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
@pytest.mark.parametrize("role", ["head", "worker"])
def test_torch_pinned_and_installed_before_the_package(
    path: Path, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = prepared(path, monkeypatch)
    cmds = config[f"{role}_setup_commands"]  # prepare_config merged setup_commands in front
    mount = package_mount(config)
    torch_at = [i for i, c in enumerate(cmds) if re.search(r"install\b.*\btorch\b", c)]
    pkg_at = [
        i for i, c in enumerate(cmds) if re.search(rf"install\b.*-e\s+{re.escape(mount)}\b", c)
    ]
    assert torch_at and pkg_at, cmds
    assert max(torch_at) < min(pkg_at), "torch must be installed before the package"
    pin = torch_pin()
    for i in torch_at:  # every torch install uses exactly the pyproject pin
        specs = re.findall(r"\btorch[^\s\"']*", cmds[i])
        assert specs and all(s == pin for s in specs), (cmds[i], pin)
    # the CPU head/machines get the CPU build, GPU ones the default (CUDA) wheel
    assert any("download.pytorch.org/whl/cpu" in cmds[i] for i in torch_at)
    assert any("nvidia-smi" in cmds[i] for i in torch_at)


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_repo_synced_without_heavy_or_shadowing_folders(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = prepared(path, monkeypatch)
    mount = package_mount(config)
    # `ray submit` runs ~/tune.py: a ~/seem_ray folder would shadow the installed package.
    assert Path(mount).name != "seem_ray", mount
    assert {".venv", "runs", "datasets"} <= set(config["rsync_exclude"])


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_dashboard_bound_to_loopback(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = prepared(path, monkeypatch)
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and "--head" in head[0]
    assert "--dashboard-host=127.0.0.1" in head[0]
    assert not any("0.0.0.0" in c for c in all_commands(config))
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert workers and all("--address=$RAY_HEAD_IP:6379" in c for c in workers)
    assert "--port=6379" in head[0]


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_node_environment_is_absolute_and_shared(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = prepared(path, monkeypatch)
    text = "\n".join(all_commands(config))
    datasets = set(re.findall(r"MINARI_DATASETS_PATH=([^\s'\"]+)", text))
    assert len(datasets) == 1, datasets  # one value, written once for every node
    assert Path(datasets.pop()).is_absolute()
    assert re.search(r"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=\d", text)
    # start commands and the `ray submit` driver (run through ~/.bashrc) both get it
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("source ~/.seem_ray_env" in c and "ray start" in c for c in config[key])
    assert any(".bashrc" in c and "source ~/.seem_ray_env" in c for c in config["setup_commands"])


@pytest.mark.parametrize("path", [AWS_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_every_command_is_valid_bash(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """YAML folding mistakes (a lost `;`, an unbalanced quote) show up as bash syntax errors."""
    config = prepared(path, monkeypatch)
    for cmd in all_commands(config):
        res = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert res.returncode == 0, (cmd, res.stderr)


def test_aws_head_is_cpu_and_workers_are_multi_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    config = prepared(AWS_YAML, monkeypatch)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers and all(w["resources"].get("GPU", 0) >= 1 for w in workers.values())
    assert max(w["resources"]["GPU"] for w in workers.values()) >= 4  # multi-GPU nodes
    for name, w in workers.items():
        assert w["node_config"]["InstanceType"].startswith(GPU_FAMILIES), name
        assert 0 <= w["min_workers"] <= w["max_workers"] <= config["max_workers"], name
    images = config["docker"]
    assert "gpu" in images["worker_image"] and "gpu" not in images["head_image"]
    import ray

    assert all(ray.__version__ in images[k] for k in ("head_image", "worker_image"))


def test_aws_marks_what_users_must_edit() -> None:
    lines = AWS_YAML.read_text().splitlines()

    def marked(key: str) -> bool:
        hits = [i for i, line in enumerate(lines) if key in line]
        return any("EDIT" in lines[i] or (i and "EDIT" in lines[i - 1]) for i in hits)

    for key in (
        "region:",
        "ssh_private_key",
        "KeyName",
        "SubnetIds",
        "SecurityGroupIds",
        "InstanceType:",
        "max_workers:",
        "ImageId: &ami",
    ):
        assert marked(key), f"no '# EDIT' mark next to {key}"


def test_local_config_forbids_node_types_and_marks_placeholders() -> None:
    raw = load(LOCAL_YAML)
    assert "available_node_types" not in raw and "head_node_type" not in raw
    assert raw["provider"]["head_ip"] == "127.0.0.1"
    assert isinstance(raw["provider"]["worker_ips"], list)
    text = LOCAL_YAML.read_text()
    for key in ("ssh_user:", "ssh_private_key:", "head_ip:"):
        line = next(line for line in text.splitlines() if key in line)
        assert "# EDIT" in line, line


def test_local_provider_rejects_node_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Why local.yaml has no available_node_types: Ray aborts on them for the local provider."""
    bad = load(LOCAL_YAML)
    bad["available_node_types"] = {"x": {"resources": {}, "node_config": {}}}
    path = tmp_path / "bad_local.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(Exception, match="available_node_types"):
        prepared(path, monkeypatch)


@pytest.mark.parametrize("script", [START, STOP], ids=["start", "stop"])
def test_scripts_parse_and_print_help(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    res = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0 and "--temp-dir" in res.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bogus"], 2, "unknown argument"),
        (["--workers", "two"], 1, "--workers must be a non-negative integer"),
        (["--port"], 2, "--port needs a value"),
    ],
)
def test_start_script_rejects_bad_input(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    res = subprocess.run(
        ["bash", str(START), "--temp-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == code, res
    assert message in res.stderr
    assert not list(tmp_path.glob("session_*")), "nothing may start on bad input"


def test_stop_script_scoped_and_idempotent(tmp_path: Path) -> None:
    res = subprocess.run(
        ["bash", str(STOP), "--temp-dir", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert "nothing to stop" in res.stdout
    assert "ray stop" not in res.stdout  # the scoped form never calls the broad `ray stop`


def test_readme_documents_the_entry_points() -> None:
    readme = (REPO / "cluster" / "README.md").read_text()
    for needle in (
        "ray submit cluster/local.yaml seem_ray/tune.py",
        "ray submit ray_cluster.yaml seem_ray/tune.py",
        "--address auto",
        "num_workers",
        "use_gpu",
        "start_local.sh",
        "stop_local.sh",
    ):
        assert needle in readme, needle
    # every option the README passes to the scripts is one they document in --help
    for script in (START, STOP):
        help_text = subprocess.run(
            ["bash", str(script), "--help"], capture_output=True, text=True, timeout=30
        ).stdout
        cmds = re.findall(rf"^\s*(?:\S+=\S+\s+)*(cluster/{script.name}[^\n]*)$", readme, flags=re.M)
        assert cmds, script.name
        for cmd in cmds:
            for arg in shlex.split(cmd.split(" #")[0])[1:]:
                if arg.startswith("--"):
                    assert arg.split("=")[0] in help_text, (script.name, arg)
