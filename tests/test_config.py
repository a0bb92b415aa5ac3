"""Every option of every config group composes, and its objects instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.strategies import FSDPStrategy

from abr_lab.config import compose_config
from abr_lab.train import CONFIG_DIR, check_launcher, instantiate_group, train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_defaults_compose_to_the_unet_family(tmp_path):
    cfg = compose_config(root_dir=tmp_path)
    assert cfg.model._target_.endswith("OptimizedUNetModule")
    assert cfg.data._target_.endswith("SimulatedABRDataModule")
    assert HydraConfig.get().runtime.choices["loss"] == "abr"
    assert cfg.model.loss == cfg.loss  # the loss group reaches the module (one source)
    assert cfg.monitor.metric == "val/loss" and cfg.optimized_metric == "val/loss"


def test_lstm_family_composes_without_a_loss_group(tmp_path):
    cfg = compose_config(["model=lstm_extractor"], root_dir=tmp_path)
    assert cfg.model._target_.endswith("LSTMExtractorModule")
    assert cfg.data._target_.endswith("SinusoidDataModule")
    assert cfg.monitor.metric == "val/mse" and cfg.optimized_metric == "val/mse"
    assert cfg.model.freqs == cfg.data.freqs  # one source for data-dependent arguments
    assert "loss" not in cfg


@pytest.mark.parametrize("model", options("model"))
def test_model_selects_its_data_and_everything_instantiates(model, tmp_path):
    cfg = compose_config([f"model={model}"], root_dir=tmp_path, output_dir=tmp_path / "run")
    assert HydraConfig.get().runtime.choices["data"] != "???"
    assert isinstance(hydra.utils.instantiate(cfg.data, _convert_="all"), L.LightningDataModule)
    assert isinstance(hydra.utils.instantiate(cfg.model, _convert_="all"), L.LightningModule)
    assert instantiate_group(cfg.callbacks) and instantiate_group(cfg.logger)


def test_data_on_the_command_line_beats_the_models_choice(tmp_path):
    cfg = compose_config(["model=lstm_extractor", "data=sinusoids_per_step"], root_dir=tmp_path)
    assert cfg.data.noise_model == "per_step"


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(data, tmp_path):
    # what the user names: a file or a corpus folder (read in setup)
    required = {
        "abr_file": ["data.path=clinic.h5"],
        "asvspoof2019": ["data.root=LA"],
        "in_the_wild": ["data.root=w"],
        "image_folder": ["data.root=imgs"],
    }
    cfg = compose_config([f"data={data}", *required.get(data, [])], root_dir=tmp_path)
    assert isinstance(hydra.utils.instantiate(cfg.data, _convert_="all"), L.LightningDataModule)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option_instantiates(trainer, tmp_path, monkeypatch):
    monkeypatch.setenv("NUM_NODES", "2")
    cfg = compose_config([f"trainer={trainer}"], root_dir=tmp_path, output_dir=tmp_path / "run")
    if trainer == "multi_node":
        assert cfg.trainer.num_nodes == 2  # read from the environment
    if trainer == "fsdp":  # Lightning's FSDP needs CUDA: check the strategy it would get
        strategy = hydra.utils.instantiate(cfg.trainer.strategy)
        assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
        return
    if cfg.trainer.accelerator == "gpu":  # no GPU here: check the rest of the config on CPU
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 2
    assert isinstance(hydra.utils.instantiate(cfg.trainer), L.Trainer)


# What torchrun and SLURM put in each process's environment (rank 3 of 2 nodes x 2 devices).
CLUSTERS = {
    "torchrun": {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "GROUP_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "run",
    },
    "slurm": {
        "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NAME": "train",
        "SLURM_NODELIST": "node[1-2]",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_ID": "7",
    },
}


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_multi_node_takes_its_ranks_from_torchrun_or_slurm(cluster, tmp_path, monkeypatch):
    for name, value in {"NUM_NODES": "2", "GPUS_PER_NODE": "2", **CLUSTERS[cluster]}.items():
        monkeypatch.setenv(name, value)
    cfg = compose_config(["trainer=multi_node", "trainer.accelerator=cpu"], root_dir=tmp_path, output_dir=tmp_path)
    trainer = hydra.utils.instantiate(cfg.trainer)
    environment = {"torchrun": TorchElasticEnvironment, "slurm": SLURMEnvironment}[cluster]
    assert isinstance(trainer.strategy.cluster_environment, environment)
    assert (trainer.num_nodes, trainer.world_size, trainer.global_rank, trainer.node_rank) == (2, 4, 3, 1)
    monkeypatch.setattr("abr_lab.train.in_multirun", lambda: True)
    check_launcher(trainer)  # the cluster started the processes: safe inside a multirun (submitit_slurm)


def test_subprocess_ddp_is_refused_inside_a_multirun(tmp_path, monkeypatch):
    cfg = compose_config(["trainer=ddp_sim", "trainer.strategy=ddp"], root_dir=tmp_path, output_dir=tmp_path)
    trainer = hydra.utils.instantiate(cfg.trainer)
    check_launcher(trainer)  # a single run may re-launch its command line
    monkeypatch.setattr("abr_lab.train.in_multirun", lambda: True)
    with pytest.raises(ValueError, match="use trainer=ddp_sim"):
        check_launcher(trainer)
    check_launcher(hydra.utils.instantiate(compose_config(["trainer=ddp_sim"], root_dir=tmp_path).trainer))


@pytest.mark.parametrize("group", ["logger", "callbacks", "curriculum", "debug", "experiment", "loss"], ids=lambda g: g)
def test_every_option_of_the_other_groups_composes(group, tmp_path):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"], root_dir=tmp_path, output_dir=tmp_path / "run")
        instantiate_group(cfg.get("callbacks"))
        instantiate_group(cfg.get("logger"))


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_modes_run_the_tiny_task(debug, tiny_cfg):
    cfg = tiny_cfg(f"debug={debug}", "trainer.max_epochs=2", "logger=none")
    assert cfg.trainer.max_epochs == 2  # command-line overrides beat the debug preset
    assert "test/mse" in train(cfg)["test"]


def test_unknown_option_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigCompositionException, match="Available options in 'model'") as err:
        compose_config(["model=nope"], root_dir=tmp_path)
    assert "lstm_extractor" in str(err.value) and "optimized_unet" in str(err.value)
