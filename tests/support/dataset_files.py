"""Dataset files the tests upload, written from named arrays: npz, CSV (one column per
scalar, ``<name>_<i>`` per element of a vector) and TFRecord (float features).

Imports TensorFlow."""

import csv
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.support.keras_models import npz_bytes


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> Path:
    path.write_bytes(npz_bytes(arrays))
    return path


def write_tfrecord(arrays: dict[str, np.ndarray], path: Path, gzip: bool = False) -> Path:
    n = len(next(iter(arrays.values())))
    options = "GZIP" if gzip else None
    with tf.io.TFRecordWriter(str(path), options=options) as writer:
        for i in range(n):
            feature = {
                name: tf.train.Feature(
                    float_list=tf.train.FloatList(value=np.ravel(values[i]).tolist())
                )
                for name, values in arrays.items()
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def write_csv(arrays: dict[str, np.ndarray], path: Path) -> Path:
    header, columns = [], []
    for name, values in arrays.items():
        if values.ndim == 1:
            header.append(name)
            columns.append(values[:, None])
        else:
            header += [f"{name}_{i}" for i in range(values.shape[1])]
            columns.append(values)
    table = np.concatenate(columns, axis=1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table.tolist())
    return path
