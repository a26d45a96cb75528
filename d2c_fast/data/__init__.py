"""Datasets for d2c_fast.

* :class:`FacesDataset` / :func:`render_face`: the built-in, procedurally rendered face
  dataset with five binary attributes (no downloads; deterministic from (seed, split, index)).
* :class:`ImageFolderDataset`: a folder of image files.
* :class:`CelebADataset`: CelebA with its 40 attributes and the NVAE/D2C CelebA-64 crop.
"""
from d2c_fast.data._common import DatasetError
from d2c_fast.data.celeba import (
    CELEBA_ATTRIBUTES,
    CELEBA_CENTER_CROP_BOX,
    CELEBA_CROP_BOX,
    CELEBA_SPLIT_ENDS,
    CelebADataset,
)
from d2c_fast.data.faces import (
    ATTRIBUTE_RATES,
    ATTRIBUTES,
    SPLITS,
    FacesDataset,
    labels_only,
    labels_tensor,
    landmarks,
    make_attribute_preview,
    make_grid_preview,
    render_face,
)
from d2c_fast.data.folder import ImageFolderDataset

__all__ = [
    "DatasetError",
    "ATTRIBUTES",
    "ATTRIBUTE_RATES",
    "SPLITS",
    "FacesDataset",
    "render_face",
    "labels_only",
    "labels_tensor",
    "landmarks",
    "make_grid_preview",
    "make_attribute_preview",
    "ImageFolderDataset",
    "CelebADataset",
    "CELEBA_ATTRIBUTES",
    "CELEBA_CROP_BOX",
    "CELEBA_CENTER_CROP_BOX",
    "CELEBA_SPLIT_ENDS",
]
