"""Checkpoints (layer 2): loading and saving models, their fingerprint, random models.

* :mod:`~d2c_fast.checkpoint.load`: the official ``model.ckpt`` / boundary ``.ckpt`` (read
  without executing code) and our ``.safetensors``, as a :class:`LoadedModel`.
* :mod:`~d2c_fast.checkpoint.fingerprint`: the model fingerprint that fitted attribute files
  record.
* :mod:`~d2c_fast.checkpoint.random_init`: random-weight models for tests and benchmarks.
"""
from .fingerprint import identity_json, is_legacy_fingerprint, model_fingerprint
from .load import (MODEL_ARGUMENT, NATIVE_FORMAT, NATIVE_VERSION, UNET_DTYPES, LoadedModel,
                   convert, is_alias_key, latent_norm_kind, load_boundary, load_model,
                   load_native, load_official, official_autoencoder_keys, read_safetensors,
                   refuse_image_as_model, save_native, torch_load_safe)
from .random_init import arch256_config_path, random_model

__all__ = ["LoadedModel", "load_model", "load_official", "load_native", "save_native", "convert",
           "load_boundary", "torch_load_safe", "latent_norm_kind", "official_autoencoder_keys",
           "is_alias_key", "read_safetensors", "UNET_DTYPES", "NATIVE_FORMAT", "NATIVE_VERSION",
           "model_fingerprint", "identity_json", "is_legacy_fingerprint", "random_model",
           "arch256_config_path", "refuse_image_as_model", "MODEL_ARGUMENT"]
