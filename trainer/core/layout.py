"""The step vector's layout by name, and its assembly on the host.

A step's numbers come from three places: the device (every parameter's gradient norm, then
the device scalars: total norm, losses, output statistics, update ratio, the GradScaler's
scale and skip), the host (settings in force, timing) and the host's reduction of the
parameter norms (one norm per layer, how many parameters exceed the explosion bound, the
largest). :class:`VectorLayout` says where each named channel goes (``slot["out/raw_min"]``),
and :meth:`VectorLayout.assemble` lays one step out in schema order with a handful of
array operations: no per-number Python, whatever the number of layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from octa_tui.protocol.messages import Schema

from .measure import Layer

# Channels the host reduces from the parameter norms (besides one norm per layer).
N_OVER_BOUND = "gradstat/n_over_bound"
MAX_PARAM_NORM = "gradstat/max_param_norm"


class VectorLayout:
    """Where each number of a step goes in the published vector.

    ``device_keys`` name the device scalars in the order the probe stacks them (after the
    parameter norms); ``host_keys`` the host values in the order the probe lists them. Every
    other channel is a layer norm or one of the two host reductions. :attr:`slot` maps each
    channel key to its position in the published vector.
    """

    def __init__(self, schema: Schema, layers: Sequence[Layer], param_count: int,
                 device_keys: Sequence[str], host_keys: Sequence[str]) -> None:
        channels = schema.channels
        self.slot: dict[str, int] = {key: i for i, key in enumerate(channels)}
        self.width = len(channels)
        self.param_count = int(param_count)
        self.device_keys = tuple(device_keys)
        self.host_keys = tuple(host_keys)
        grad_keys = [f"grad/{name}" for name in schema.grad]
        covered = [*self.device_keys, *self.host_keys, *grad_keys, N_OVER_BOUND, MAX_PARAM_NORM]
        if sorted(covered) != sorted(channels):
            missing = sorted(set(channels) - set(covered))
            extra = sorted(set(covered) - set(channels))
            raise ValueError(f"step layout does not cover the schema: missing {missing}, extra {extra}")
        self.device_pos = np.array([self.slot[k] for k in self.device_keys], dtype=np.intp)
        self.host_pos = np.array([self.slot[k] for k in self.host_keys], dtype=np.intp)
        self.grad_pos = np.array([self.slot[k] for k in grad_keys], dtype=np.intp)
        self.over_pos = self.slot[N_OVER_BOUND]
        self.max_pos = self.slot[MAX_PARAM_NORM]
        self.layer_params = [np.array(layer.params, dtype=np.intp) for layer in layers]
        layer_of_param = np.zeros(self.param_count, dtype=np.intp)
        for row, params in enumerate(self.layer_params):
            layer_of_param[params] = row
        self.layer_of_param = layer_of_param
        # One parameter per layer, in order: the layer norms are the parameter norms.
        self.one_per_layer = len(layers) == self.param_count and bool(
            np.array_equal(layer_of_param, np.arange(self.param_count)))
        self.layer_count = len(layers)

    @property
    def device_count(self) -> int:
        """How many numbers a step's device vector holds (parameter norms + device scalars)."""
        return self.param_count + len(self.device_keys)

    def assemble(self, measured: np.ndarray, host: Sequence[float], bound: float) -> np.ndarray:
        """One step in schema order (float32) from the device vector and the host values.

        ``measured`` is the parameter norms then the device scalars; a layer's norm is the
        square root of the sum of its parameters' squared norms (float64); a non-finite
        parameter norm shows in its own layer only. The largest norm keeps a NaN.
        """
        count = self.param_count
        norms = measured[:count]
        vector = np.empty(self.width, dtype=np.float32)
        vector[self.device_pos] = measured[count:]
        vector[self.host_pos] = host
        if self.one_per_layer:
            vector[self.grad_pos] = norms
        else:
            wide = norms.astype(np.float64)
            squares = np.bincount(self.layer_of_param, weights=wide * wide, minlength=self.layer_count)
            vector[self.grad_pos] = np.sqrt(squares)
        vector[self.over_pos] = np.count_nonzero(norms > bound)
        vector[self.max_pos] = np.maximum.reduce(norms) if count else 0.0  # NaN propagates
        return vector

    def assemble_rows(self, measured: np.ndarray, host: np.ndarray, bound: float) -> np.ndarray:
        """Many steps at once: :meth:`assemble` of each row of ``measured`` (steps x
        :attr:`device_count`) with the row of ``host`` (steps x host values), as one
        (steps x width) float32 array, with the same handful of array operations for any
        number of steps.
        """
        rows = measured.shape[0]
        if rows == 1:  # one step: the one-row operations are cheaper
            return self.assemble(measured[0], host[0], bound)[None, :]
        count = self.param_count
        norms = measured[:, :count]
        vectors = np.empty((rows, self.width), dtype=np.float32)
        vectors[:, self.device_pos] = measured[:, count:]
        vectors[:, self.host_pos] = host
        if self.one_per_layer:
            vectors[:, self.grad_pos] = norms
        else:
            wide = norms.astype(np.float64)
            squares = np.zeros((rows, self.layer_count), dtype=np.float64)
            np.add.at(squares, (slice(None), self.layer_of_param), wide * wide)
            vectors[:, self.grad_pos] = np.sqrt(squares)
        vectors[:, self.over_pos] = np.count_nonzero(norms > bound, axis=1)
        vectors[:, self.max_pos] = np.maximum.reduce(norms, axis=1) if count else 0.0
        return vectors
