"""Two Ray nodes on one machine: two Train workers land on different nodes and train to the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seem_ray.config import parse_run_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_workers_on_two_nodes(shared_datasets: Path, tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from seem_ray.train import fit, ray_env_vars

    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(shared_datasets)
    # One CPU per node and one CPU per worker: the two workers cannot share a node.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}}
    )
    cluster.add_node(num_cpus=1, resources={"second": 1})
    try:
        env = {k: v for k, v in ray_env_vars().items() if v}
        ray.init(address=cluster.address, runtime_env={"env_vars": env}, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        cfg = parse_run_config(
            {
                "data": {"dataset": "seem_ray/pointmaze-umaze-dense-v0", "max_transitions": 300},
                "algo": {"batch_size": 32},
                "critic": {"hidden": [16, 16]},
                "actor": {"hidden": [16, 16]},
                "seem": {"every": 50, "probe_size": 16},
                "train": {
                    "steps": 100,
                    "log_every": 50,
                    "checkpoint_every": 100,
                    "eval_episodes": 0,
                    "threads": 1,
                },
                "scaling": {"num_workers": 2, "cpus_per_worker": 1.0},
            }
        )
        metrics = fit(cfg, name="two_nodes", storage_path=tmp_path)
        assert int(metrics["step"]) == 100
    finally:
        ray.shutdown()
        cluster.shutdown()
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
