"""One entry point from a data-set name to a batched ``tf.data.Dataset`` of ``(x, y)``.

Data-set modules plug in with :func:`register_source`; any other name is read with TFDS
(``as_supervised=True``) (e.g. ``"mnist1d"``,
``"mnist1d/shuffled"``, ``"cifar10"``, ``"svhn_cropped"``).

Example:

    >>> import ddu_tf
    >>> from ddu_tf import data
    >>> train = data.load("mnist1d", "train", batch_size=100)            # fixed order
    >>> x, y = next(iter(train))                                         # [100, 40], [100]
    >>> data.register_source("my_set", lambda split, data_dir=None: (xs, ys))

TFDS data sets go through :func:`tfds_builder`, which prepares one on first use and refuses a
damaged prepared directory (missing ``dataset_info.json``, missing or truncated record files)
with a message naming the directory to delete, instead of a TensorFlow error mid-training.
"""
from __future__ import annotations

import numbers
import os
import pathlib
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = ["load", "register_source", "registered_sources", "tfds_builder", "unregister_source"]

Source = Callable[..., Any]
"""``fn(split, data_dir=None)`` -> unbatched ``tf.data.Dataset`` of ``(x, y)`` or a pair of
arrays ``(x [n, ...], y [n])``."""

_SOURCES: dict[str, Source] = {}


def register_source(name: str, fn: Source, *, overwrite: bool = False) -> None:
    """Registers ``fn`` as the source of data set ``name`` for :func:`load`.

    Args:
        name: data-set name, e.g. ``"dirty_mnist"``.
        fn: ``fn(split: str, data_dir: str | None = None)`` returning either an unbatched
            ``tf.data.Dataset`` of ``(x, y)`` pairs or a tuple of arrays ``(x [n, ...],
            y [n])`` with equal first dimensions.
        overwrite: replace an existing registration instead of raising.

    Raises:
        ValueError: ``name`` is not a non-empty string, ``fn`` is not callable, or ``name`` is
            already registered and ``overwrite`` is False.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected name to be a non-empty string. Received: name={name!r}")
    if not callable(fn):
        raise ValueError(f"Expected fn to be callable. Received: fn={fn!r}")
    if name in _SOURCES and not overwrite:
        raise ValueError(f"A source is already registered under name={name!r}; pass "
                         "overwrite=True to replace it.")
    _SOURCES[name] = fn


def unregister_source(name: str) -> None:
    """Removes the source registered as ``name``.

    Raises:
        ValueError: if no source is registered under ``name``.
    """
    if name not in _SOURCES:
        raise ValueError(f"No source registered under name={name!r}. Registered: "
                         f"{registered_sources()}")
    del _SOURCES[name]


def registered_sources() -> list[str]:
    """Sorted names of the registered sources (names that bypass ``tfds.load``)."""
    return sorted(_SOURCES)


_TFRECORD_FRAME_BYTES = 16
"""Bytes a TFRecord file adds per record (length, length CRC, data CRC)."""


def _damaged(directory, problem: str) -> ValueError:
    return ValueError(
        f"Expected a complete prepared TFDS data set in {directory}. Received: {problem}. "
        f"The directory is damaged (e.g. an interrupted copy or build): delete it (rm -r "
        f"{directory}) and load the data set again to rebuild it.")


def _check_prepared(builder) -> None:
    """Raises ValueError naming ``builder.data_dir`` when it exists but is not intact.

    Checks that ``dataset_info.json`` is there and records splits, and, for TFRecord files,
    that every record file exists and the files of each split hold exactly the bytes
    ``dataset_info.json`` recorded (its ``numBytes`` plus 16 framing bytes per record), which
    catches truncated, missing and overwritten shards without reading them.
    """
    directory = pathlib.Path(builder.data_dir)
    if not directory.is_dir():
        return  # not prepared yet: download_and_prepare builds it
    if not (directory / "dataset_info.json").is_file():
        raise _damaged(directory, "no dataset_info.json")
    splits = builder.info.splits
    if not splits:
        raise _damaged(directory, "a dataset_info.json that records no splits")
    if str(builder.info.file_format.value) != "tfrecord":
        return
    for split in splits.values():
        files = split.filepaths
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise _damaged(directory, f"split {split.name!r} without its files {missing}")
        if split.num_bytes:
            size = sum(f.stat().length for f in files)
            expected = int(split.num_bytes) + _TFRECORD_FRAME_BYTES * split.num_examples
            if size != expected:
                raise _damaged(directory, f"split {split.name!r} files of {size} bytes where "
                                          f"dataset_info.json records {expected} "
                                          f"({split.num_examples} records): truncated or "
                                          "overwritten")


def _tfds_root(data_dir: Optional[str]) -> pathlib.Path:
    """The TFDS data directory in use: ``data_dir``, else ``$TFDS_DATA_DIR``, else TFDS's
    default (``~/tensorflow_datasets``)."""
    return pathlib.Path(data_dir or os.environ.get("TFDS_DATA_DIR")
                        or tfds.core.constants.DATA_DIR).expanduser()


def tfds_builder(name: str, *, data_dir: Optional[str] = None,
                 manual_dir: Optional[os.PathLike] = None, **builder_kwargs):
    """The TFDS builder of ``name``, prepared (built now when absent) and checked intact.

    The one way the package opens a TFDS data set; ``builder.as_dataset(split=...)`` then
    reads it.

    Args:
        name: a TFDS name, e.g. ``"mnist1d"``, ``"dirty_mnist/generated"``, ``"cifar10"``
            (the package's builders are registered by ``import ddu_tf``).
        data_dir: TFDS data directory; None uses ``$TFDS_DATA_DIR`` or TFDS's default.
        manual_dir: manual directory of the build (``None``: the builder's default, e.g.
            ``$DDU_TF_DATA_DIR`` for the package's builders).
        **builder_kwargs: passed to ``tfds.builder`` (e.g. MNIST-1D generation arguments).

    Returns:
        A prepared ``tfds.core.DatasetBuilder``.

    Raises:
        ValueError: ``name`` is no TFDS data set; or its prepared directory is damaged (the
            message names the directory to delete so that the next load rebuilds it).
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown data set. Expected a TFDS name (the package's 'mnist1d', "
            f"'ambiguous_mnist', 'dirty_mnist', or a TFDS catalogue name such as 'cifar10') "
            f"or, for ddu_tf.data.load, a registered source {registered_sources()}. "
            f"Received: name={name!r}. Check the spelling, `import ddu_tf` first, or register "
            "the source with ddu_tf.data.register_source.") from None
    except ValueError:
        raise  # bad config or builder arguments: the builder's own message
    except Exception as e:  # e.g. an unreadable dataset_info.json (protobuf ParseError)
        directory = _tfds_root(data_dir) / name.split("/")[0]
        if directory.is_dir():
            raise _damaged(directory, f"files TFDS cannot read ({type(e).__name__}: "
                                      f"{str(e).strip()[:300]})") from e
        raise
    _check_prepared(builder)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir)))
    return builder


def _from_source(name: str, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    out = _SOURCES[name](split, data_dir=data_dir)
    if isinstance(out, tf.data.Dataset):
        return out
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(f"Expected the source of {name!r} to return a tf.data.Dataset or a "
                         f"pair (x, y). Received: {type(out).__name__}")
    x, y = (np.asarray(a) for a in out)
    if x.shape[:1] != y.shape[:1]:
        raise ValueError(f"Expected the source of {name!r} to return x and y with equal first "
                         f"dimensions. Received: x.shape={x.shape}, y.shape={y.shape}")
    return tf.data.Dataset.from_tensor_slices((x, y))


def load(name: str, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
         data_dir: Optional[str] = None, drop_remainder: bool = False,
         preprocess: Optional[Callable[[tf.Tensor, tf.Tensor], tuple]] = None,
         shuffle_buffer_size: Optional[int] = None, cache: bool = False,
         repeat: bool = False) -> tf.data.Dataset:
    """A batched, prefetched ``tf.data.Dataset`` of ``(x [batch, ...], y [batch])``.

    Args:
        name: a name given to :func:`register_source`, or any TFDS name with supervised keys
            (``"mnist1d"``, ``"mnist1d/shuffled"``, ``"cifar10"``, ``"svhn_cropped"``).
        split: split string, e.g. ``"train"``, ``"test"``, ``"train[:90%]"`` (TFDS slicing
            applies to TFDS names; registered sources interpret it themselves).
        batch_size: examples per batch (>= 1).
        shuffle: shuffle examples each epoch (seeded by ``seed``); default keeps the stored
            order (the MNIST-1D recipe trains in fixed order).
        seed: seed of the example shuffle.
        data_dir: TFDS data directory, or the directory given to a registered source.
        drop_remainder: drop the last incomplete batch.
        preprocess: optional ``fn(x, y) -> (x, y)`` mapped over single examples before
            batching (parallel, deterministic order).
        shuffle_buffer_size: shuffle buffer; None uses the whole split when its size is
            known, else 10 000.
        cache: cache the examples in memory after ``preprocess``.
        repeat: repeat indefinitely (reshuffled each epoch when ``shuffle``).

    Returns:
        ``tf.data.Dataset`` yielding ``(x, y)`` batches.

    Raises:
        ValueError: invalid ``name``, ``split``, ``batch_size``, ``seed`` or
            ``shuffle_buffer_size``; a damaged prepared TFDS directory (see
            :func:`tfds_builder`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected name to be a non-empty string. Received: name={name!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"Expected split to be a non-empty string. Received: split={split!r}")
    if (not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool)
            or batch_size < 1):
        raise ValueError("Expected batch_size to be an integer >= 1. "
                         f"Received: batch_size={batch_size!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"Expected seed to be an integer. Received: seed={seed!r}")
    if shuffle_buffer_size is not None and (not isinstance(shuffle_buffer_size, numbers.Integral)
                                            or shuffle_buffer_size < 1):
        raise ValueError("Expected shuffle_buffer_size to be None or an integer >= 1. "
                         f"Received: shuffle_buffer_size={shuffle_buffer_size!r}")
    if preprocess is not None and not callable(preprocess):
        raise ValueError("Expected preprocess to be None or callable. "
                         f"Received: preprocess={preprocess!r}")

    if name in _SOURCES:
        ds = _from_source(name, split, data_dir)
    else:
        # Files are read in order (ordered builders such as mnist1d reject file shuffling);
        # shuffling happens on examples below.
        ds = tfds_builder(name, data_dir=data_dir).as_dataset(
            split=split, as_supervised=True, shuffle_files=False)
    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if shuffle:
        if shuffle_buffer_size is None:
            size = int(ds.cardinality())
            shuffle_buffer_size = size if size > 0 else 10_000
        ds = ds.shuffle(shuffle_buffer_size, seed=int(seed), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
