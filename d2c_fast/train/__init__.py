"""Training D2C models: stage 1 (autoencoder + MoCo-v2), stage 2 (latent DDIM prior), export
to the native ``.safetensors`` that :class:`d2c_fast.Sampler` loads.

    from d2c_fast.train import train
    train("d2c_fast/configs/builtin_train.json", "runs/builtin")      # resumes by default

Data-parallel: ``torchrun --nproc_per_node=N -m d2c_fast train CONFIG -o OUT`` (gloo on CPU,
NCCL on GPUs).
"""
from .engine import EMA
from .config import AEStageConfig, AugmentConfig, DataConfig, DiffusionStageConfig, TrainConfig
from .pipeline import export_run, train

__all__ = ["train", "export_run", "TrainConfig", "DataConfig", "AEStageConfig",
           "DiffusionStageConfig", "AugmentConfig", "EMA"]
