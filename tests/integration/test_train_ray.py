"""Ray Train: DDP on two CPU workers, gradient equivalence, checkpoints, worker-kill recovery."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from seem_ray.config import parse_run_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = {
    "data": {"dataset": "seem_ray/pointmaze-umaze-dense-v0", "max_transitions": 500},
    "algo": {"name": "td3bc", "batch_size": 32},
    "critic": {"hidden": [32, 32]},
    "actor": {"hidden": [32, 32]},
    "seem": {"every": 50, "probe_size": 32},
    "train": {
        "steps": 200,
        "log_every": 50,
        "checkpoint_every": 100,
        "eval_episodes": 0,
        "threads": 1,
    },
    "scaling": {"num_workers": 2, "cpus_per_worker": 1.0, "max_failures": 2},
}


@pytest.fixture(scope="module")
def ray_session(shared_datasets: Path):
    import ray

    from seem_ray.train import ray_env_vars

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
        env = {k: v for k, v in ray_env_vars().items() if v}
        # Worker functions defined in this test module travel by value (tests/ is not importable there).
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=False,
        )
        try:
            yield
        finally:
            ray.shutdown()


def test_two_workers_train_to_completion_with_checkpoints(ray_session, tmp_path: Path) -> None:
    from seem_ray.checkpoint import load_checkpoint
    from seem_ray.train import fit

    cfg = parse_run_config(TINY)
    metrics = fit(cfg, name="ddp2", storage_path=tmp_path)
    assert int(metrics["step"]) == 200
    assert "seem" in metrics and -1.0 <= metrics["seem"] <= 1.0
    ckpts = sorted((tmp_path / "ddp2").glob("checkpoint_*/state.pt"))
    assert ckpts, "no checkpoint written"
    state = load_checkpoint(ckpts[-1])
    assert state["step"] == 200 and len(state["probe_index"]) == 32


def _ddp_equivalence_worker(config: dict) -> None:
    import ray.train

    from seem_ray.algos import build_algorithm
    from seem_ray.data.batches import Batch
    from seem_ray.train import wrap_ddp

    torch.manual_seed(0)
    cfg = parse_run_config(config["run"])
    algo = build_algorithm(cfg.algo, cfg.critic, cfg.actor, 5, 2, 1.0, torch.device("cpu"))
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    wrap_ddp(algo, torch.device("cpu"))
    for full in _batches():
        rows = slice(rank * len(full) // world, (rank + 1) * len(full) // world)
        algo.update(
            Batch(*(getattr(full, f)[rows] for f in ("obs", "act", "rew", "next_obs", "done")))
        )
    if rank == 0:
        flat = torch.cat(
            [p.detach().flatten() for m in (algo.critic, algo.actor) for p in m.parameters()]
        )
        np.save(config["out"], flat.numpy())
    ray.train.report({"done": 1.0})


def _batches() -> list:
    from seem_ray.data.batches import Batch

    g = torch.Generator().manual_seed(123)
    out = []
    for _ in range(3):
        out.append(
            Batch(
                obs=torch.randn(64, 5, generator=g),
                act=torch.rand(64, 2, generator=g) * 2 - 1,
                rew=torch.randn(64, generator=g),
                next_obs=torch.randn(64, 5, generator=g),
                done=(torch.rand(64, generator=g) < 0.1).float(),
            )
        )
    return out


def test_two_workers_match_one_worker_on_the_concatenated_batch(
    ray_session, tmp_path: Path
) -> None:
    """DDP averages gradients, so 2 x 32 rows must equal 1 x 64 rows (IQL: every loss is a batch mean)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from seem_ray.algos import build_algorithm

    run = {
        "algo": {"name": "iql", "batch_size": 64},
        "critic": {"hidden": [16, 16]},
        "actor": {"hidden": [16, 16]},
    }
    out = tmp_path / "ddp_params.npy"
    TorchTrainer(
        _ddp_equivalence_worker,
        train_loop_config={"run": run, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="equiv", storage_path=str(tmp_path)),
    ).fit()
    cfg = parse_run_config(run)

    def fresh():
        torch.manual_seed(0)
        return build_algorithm(cfg.algo, cfg.critic, cfg.actor, 5, 2, 1.0, torch.device("cpu"))

    def flat(algo) -> torch.Tensor:
        return torch.cat(
            [p.detach().flatten() for m in (algo.critic, algo.actor) for p in m.parameters()]
        )

    algo = fresh()
    for batch in _batches():
        algo.update(batch)
    single = flat(algo)
    assert (single - flat(fresh())).abs().max() > 1e-4  # training moved the weights
    torch.testing.assert_close(torch.from_numpy(np.load(out)), single, rtol=1e-4, atol=1e-5)


def _train_worker_pids() -> list[int]:
    """RayTrainWorker processes of THIS test's Ray session only (the machine may run others)."""
    import psutil
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "RayTrainWorker" not in " ".join(proc.info.get("cmdline") or []):
            continue
        try:
            ancestors = proc.parents()
        except psutil.Error:
            continue
        if any(session in " ".join(a.cmdline()) for a in ancestors if a.is_running()):
            pids.append(proc.info["pid"])
    return pids


@pytest.mark.faults
def test_worker_killed_mid_run_resumes_from_last_checkpoint(ray_session, tmp_path: Path) -> None:
    from ray.train import UserCallback

    from seem_ray.train import make_trainer

    log = tmp_path / "reports.jsonl"

    class Recorder(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):  # noqa: ANN001
            with open(log, "a") as fh:
                fh.write(
                    json.dumps({"step": metrics[0].get("step"), "ckpt": checkpoint is not None})
                    + "\n"
                )

    cfg = parse_run_config(
        TINY | {"train": TINY["train"] | {"steps": 1500, "log_every": 50, "checkpoint_every": 250}}
    )
    trainer = make_trainer(cfg, name="killed", storage_path=tmp_path, callbacks=[Recorder()])
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            recs = (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )
            ckpt_steps = [r["step"] for r in recs if r["ckpt"]]
            # Kill two reports after the first checkpoint, so the restart visibly repeats steps.
            if ckpt_steps and recs[-1]["step"] >= ckpt_steps[0] + 100:
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append(pids[-1])
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = trainer.fit()
    thread.join(timeout=5)
    assert killed, "no worker was killed (test did not exercise recovery)"
    steps = [int(json.loads(line)["step"]) for line in log.read_text().splitlines()]
    assert steps[-1] == 1500 and int(result.metrics["step"]) == 1500
    # After the kill the run restarts at the last checkpoint: steps go back by at most one interval.
    drops = [(a, b) for a, b in zip(steps, steps[1:], strict=False) if b <= a]
    assert drops, "no restart visible in the report stream"
    for a, b in drops:
        assert a - b < 250 + 50
    # No gaps: every multiple of log_every up to the end was reported at least once.
    assert set(range(50, 1501, 50)) <= set(steps)
