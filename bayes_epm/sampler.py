"""NUTS on the model with the run data as *arguments* of one compiled program, so that a refit on
grown data does not trace or compile anything again.

Why not ``pymc.sampling.jax.sample_jax_nuts`` or ``numpyro.infer.MCMC``, which this replaces: PyMC's
JAX path turns every data container into a constant of the jitted log-density, and NumPyro's
``MCMC(jit_model_args=True)`` does not cache across runs with parallel chains (its documentation
says so: ``pmap`` is re-applied to a new function on every ``run``). Every sweep refit paid ~7 s of
jaxifying, tracing and XLA compilation (``benchmarks/refit_cost.py``), the same whether the fit had
50 runs or 1000.

What this module does instead, deliberately written on the libraries' public pieces:

- the PyMC model (:func:`bayes_epm.model.build_model`) is built once per *structure* -- formats,
  factor levels, priors, the centring of log N and log D, and a run-count *bucket* -- and its
  log-density is jaxified by PyMC (``get_jaxified_graph``) with the value variables *and* the
  ``pm.Data`` containers as inputs;
- runs are padded up to the bucket (a power of two, at least :data:`MIN_BUCKET`) with weight 0, so
  the array shapes, hence the compiled program, stay the same until the table outgrows the bucket;
- the chains run NumPyro's functional NUTS (``numpyro.infer.hmc.hmc(potential_fn_gen=...)``: the
  same kernel, Stan-style window adaptation of step size and mass matrix, and max tree depth 10 as
  ``MCMC(NUTS(...))``) under one ``jax.pmap`` over chains (``jax.vmap`` when the host exposes fewer
  devices than chains) that is built once per compiled model and then called with new data;
- initial points are PyMC's initial point jittered by U(-1, 1) in the unconstrained space, redrawn
  until the log-density is finite (what ``pm.sample`` does);
- draws are mapped back to the constrained space, with every deterministic, by PyMC's jaxified
  graph of ``model.unobserved_value_vars`` (data-free: deterministics read only parameters and the
  fixed centring).

A fit with a structure not seen before compiles (and is kept: :data:`CACHE_SIZE` structures per
process, least recently used dropped). :attr:`CompiledModel.traces` counts how often the chain
program was traced, which the tests use to prove that a refit reuses it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc import hmc
from pymc.backends.arviz import coords_and_dims_for_inferencedata
from pymc.sampling.jax import get_jaxified_graph
from pymc.util import get_default_varnames
from pytensor.graph.traversal import graph_inputs
from pytensor.graph.replace import clone_replace

from bayes_epm.model import ModelData, Priors, _build

MIN_BUCKET = 32
CACHE_SIZE = 8
MAX_JITTER_TRIES = 10


@contextmanager
def _no_blas_warning():
    """PyTensor's graph rewrites ask for a C BLAS and warn when pip's pytensor has none; nothing
    here runs pytensor's C code (JAX executes the graphs), so that one warning is irrelevant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS", category=UserWarning)
        yield


def bucket(n_runs: int) -> int:
    """The padded length for ``n_runs`` runs: the next power of two, at least :data:`MIN_BUCKET`."""
    return max(MIN_BUCKET, 1 << max(0, math.ceil(math.log2(max(n_runs, 1)))))


@dataclass(frozen=True)
class Settings:
    draws: int
    tune: int
    chains: int
    target_accept: float
    dense_mass: bool


class CompiledModel:
    """One model structure, compiled once; :meth:`sample` runs it on any data of that structure."""

    def __init__(self, data: ModelData, priors: Priors, pad_to: int, settings: Settings) -> None:
        self.priors, self.pad_to, self.settings = priors, pad_to, settings
        self.model = model = _build(data, priors, pad_to)
        self.traces = 0
        # every data container must be an input: get_jaxified_graph would freeze any other one at
        # this fit's values, and every refit of the cache entry would silently reuse them
        if {v.name for v in model.data_vars} != set(ModelData.DATA):
            raise RuntimeError(f"the model's data containers {sorted(v.name for v in model.data_vars)} are not "
                               f"the sampler's inputs {sorted(ModelData.DATA)}")
        shared = [model[name] for name in ModelData.DATA]
        symbolic = [s.type() for s in shared]
        value_vars = model.value_vars
        [logp] = clone_replace([model.logp()], replace=dict(zip(shared, symbolic)))
        with _no_blas_warning():
            logp_fn = get_jaxified_graph(inputs=value_vars + symbolic, outputs=[logp])
        self.free = [rv.name for rv in model.free_RVs]
        self.value_names = [v.name for v in value_vars]
        # PyMC's initial point (support points, transformed); e's centre is a data input, so it is
        # set per fit (_initial_points)
        with _no_blas_warning():
            point = model.initial_point()
        self._init = [np.asarray(point[name], dtype=float) for name in self.value_names]
        flat, self._unravel = ravel_pytree([jnp.asarray(v) for v in self._init])
        self.dim = int(flat.size)

        def log_density(theta, inputs):
            return logp_fn(*self._unravel(theta), *inputs)[0]

        self._log_density = jax.jit(log_density)
        init_kernel, sample_kernel = hmc(potential_fn_gen=lambda inputs: (lambda theta: -log_density(theta, inputs)),
                                         algo="NUTS")
        s = settings

        def one_chain(rng_key, theta0, inputs):
            self.traces += 1  # runs only while JAX traces this function
            state = init_kernel(theta0, num_warmup=s.tune, target_accept_prob=s.target_accept,
                                dense_mass=s.dense_mass, model_args=(inputs,), rng_key=rng_key)

            def step(st, _):
                st = sample_kernel(st, model_args=(inputs,))
                return st, (st.z, st.diverging, st.num_steps, st.potential_energy, st.energy,
                            st.adapt_state.step_size, st.accept_prob)

            state, _ = jax.lax.scan(step, state, None, length=s.tune)
            _, trace = jax.lax.scan(step, state, None, length=s.draws)
            return trace

        self.chain_method = "parallel" if jax.local_device_count() >= s.chains else "vectorized"
        if self.chain_method == "parallel":
            self._run = jax.pmap(one_chain, in_axes=(0, 0, None))
        else:
            self._run = jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None)))
        outputs = list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))
        if set(graph_inputs(outputs)) & set(shared):  # deterministics are evaluated without the data
            raise RuntimeError("a deterministic of the model reads run data; the sampler maps draws without it")
        self.var_names = [v.name for v in outputs]
        with _no_blas_warning():
            constrain = get_jaxified_graph(inputs=value_vars, outputs=outputs)
        self._constrain = jax.jit(jax.vmap(jax.vmap(lambda theta: constrain(*self._unravel(theta)))))
        self._coords, self._dims = coords_and_dims_for_inferencedata(model)

    def _initial_points(self, inputs: tuple, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        base = self._init.copy()
        if "e" in self.value_names:  # else e comes from a previous posterior's joint prior
            base[self.value_names.index("e")] = np.asarray(inputs[ModelData.DATA.index("e_mu")], dtype=float)
        flat = np.asarray(ravel_pytree([jnp.asarray(v) for v in base])[0])
        out = []
        for _ in range(self.settings.chains):
            for _ in range(MAX_JITTER_TRIES):
                theta = flat + rng.uniform(-1.0, 1.0, flat.shape)
                if np.isfinite(float(self._log_density(jnp.asarray(theta), inputs))):
                    break
            else:
                raise RuntimeError(f"no finite log-density at {MAX_JITTER_TRIES} jittered initial points; "
                                   "the priors or the data are out of range")
            out.append(theta)
        return np.stack(out)

    def sample(self, data: ModelData, seed: int) -> az.InferenceData:
        """Run the chains on ``data`` (same structure; at most ``pad_to`` runs) and return the draws."""
        arrays = data.inputs(self.priors, self.pad_to)
        inputs = tuple(jnp.asarray(arrays[name]) for name in ModelData.DATA)
        theta0 = jnp.asarray(self._initial_points(inputs, seed))
        keys = jax.random.split(jax.random.PRNGKey(seed), self.settings.chains)
        t0 = time.perf_counter()
        z, diverging, n_steps, lp, energy, step_size, accept = jax.block_until_ready(self._run(keys, theta0, inputs))
        sampling_s = time.perf_counter() - t0
        values = self._constrain(z)
        posterior = {name: np.asarray(v) for name, v in zip(self.var_names, values)}
        n_steps = np.asarray(n_steps)
        stats = {"diverging": np.asarray(diverging), "n_steps": n_steps,
                 "tree_depth": np.log2(np.maximum(n_steps, 1)).astype(int) + 1, "lp": -np.asarray(lp),
                 "energy": np.asarray(energy), "step_size": np.asarray(step_size),
                 "acceptance_rate": np.asarray(accept)}
        n = len(data.log_loss)
        coords = {**self._coords, "run": np.arange(n)}
        idata = az.from_dict(posterior=posterior, sample_stats=stats, observed_data={"log_loss": data.log_loss},
                             coords=coords, dims={**self._dims, "log_loss": ["run"]},
                             attrs={"sampling_time": sampling_s, "tuning_steps": self.settings.tune,
                                    "inference_library": "numpyro", "modeling_interface": "pymc"})
        return idata


_CACHE: "OrderedDict[tuple, CompiledModel]" = OrderedDict()


def compiled(data: ModelData, priors: Priors, settings: Settings) -> CompiledModel:
    """The compiled model for ``data``'s structure, built on first use and kept (LRU)."""
    key = (data.structure(priors), bucket(len(data.log_loss)), settings)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    cm = CompiledModel(data, priors, bucket(len(data.log_loss)), settings)
    _CACHE[key] = cm
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return cm


def sample(runs: pd.DataFrame, priors: Priors, settings: Settings, seed: int,
           centre: tuple[float, float] | None = None) -> tuple[az.InferenceData, CompiledModel]:
    """Sample the model of ``runs``, reusing a compiled model of the same structure when there is one."""
    data = ModelData.from_runs(runs, centre, priors)
    cm = compiled(data, priors, settings)
    return cm.sample(data, seed), cm
