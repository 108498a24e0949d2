"""The resolvers conf/ uses (src.core.resolvers)."""

from __future__ import annotations

import os
import pickle

from omegaconf import OmegaConf

from src.core.resolvers import register_resolvers


def test_a_config_carries_the_launching_process_pid_into_a_job_process() -> None:
    """submitit pickles the sweep's config into each job (and each requeued job): the sweep dir keeps the pid of the
    command that launched it, so a job writes where its sweep does."""
    cfg = OmegaConf.create({"sweep_dir": "outputs/multiruns/${pid:}"})
    assert cfg.sweep_dir == f"outputs/multiruns/{os.getpid()}"
    job_config = pickle.dumps(cfg)
    try:
        OmegaConf.register_new_resolver("pid", lambda: -1, replace=True, use_cache=True)  # another process's pid
        assert pickle.loads(job_config).sweep_dir == f"outputs/multiruns/{os.getpid()}"
        assert OmegaConf.create({"sweep_dir": "${pid:}"}).sweep_dir == -1, "a new config resolves it anew"
    finally:
        register_resolvers()
