"""Priors for new methods: prior files (every bad one rejected, the study untouched), the literature
table, GMSE of a callable quantizer, a prior from a previous posterior, and what the model and the
queries do with them."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from bayes_epm.cli import main
from bayes_epm.errors import InvalidInputError
from bayes_epm.models import quantize, sparsity
from bayes_epm.models.sparsity import known_sparsifiers
from bayes_epm.priors import (LITERATURE, MASS_TOLERANCE, PriorSet, load_prior_file, parse_dist,
                              posterior_prior, register)

# a block-absmax quantizer (blocks of 32 along each row): what a new "MX-like" method looks like
QUANT_PY = '''
import torch

def mxq(x, bits):
    r, c = x.shape
    b = x.reshape(r, c // 32, 32)
    qmax = 2 ** (bits - 1) - 1 if bits > 1 else 1
    scale = b.abs().amax(-1, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.round(b / scale).clamp(-qmax, qmax) * scale).reshape(r, c)

def absmax_copy(x, bits):
    # the built-in absmax quantizer's forward pass, written again (bits >= 2)
    qmax = 2 ** (bits - 1) - 1
    step = x.abs().amax(1, keepdim=True) / qmax
    return torch.round(x / step).clamp(-qmax, qmax) * step

def wrong_shape(x, bits):
    return x[:, :10]

def broken(x, bits):
    raise RuntimeError("boom")

def magnitude_copy(w, sparsity):
    # global magnitude pruning written again: the built-in unstructured sparsity's choice
    k = round(sparsity * w.numel())
    out = w.clone().flatten()
    if k:
        out[w.abs().flatten().argsort()[:k]] = 0.0
    return out.reshape(w.shape)

def rowwise(w, sparsity):
    # per-row magnitude pruning: a different sparsifier, with a larger error than the global one
    k = round(sparsity * w.shape[1])
    idx = w.abs().argsort(dim=1)[:, :k]
    return w.clone().scatter_(1, idx, 0.0)

def prunes_too_little(w, sparsity):
    return w.clone()
'''


@pytest.fixture(autouse=True)
def _forget_methods():
    """Each test registers its own methods; none leaks into the next."""
    before = set(quantize.METHOD_QUANTIZERS), set(sparsity.METHOD_SPARSIFIERS)
    yield
    for name in set(quantize.METHOD_QUANTIZERS) - before[0]:
        quantize.unregister_method_quantizer(name)
    for name in set(sparsity.METHOD_SPARSIFIERS) - before[1]:
        sparsity.unregister_method_sparsifier(name)


def _write(tmp_path: Path, text: str, name: str = "prior.toml") -> Path:
    (tmp_path / "quant.py").write_text(QUANT_PY)
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = '''
[method.mxq]
kind = "quantizer"
[method.mxq.epm]
w4 = { dist = "beta", alpha = 18, beta = 3 }
a4 = { dist = "logitnormal", mu = 1.0, sigma = 0.5 }
[method.mxq.gmse]
quantizer = "quant.py:mxq"
'''


# ------------------------------------------------------------------------------------ distributions
def test_distributions_are_checked():
    assert parse_dist({"dist": "beta", "alpha": 18, "beta": 3}, "x").describe() == "beta(alpha=18, beta=3)"
    bad = [({"dist": "gamma", "a": 1}, "unknown distribution 'gamma'"),
           ({"dist": "beta", "alpha": 18}, "beta takes parameters alpha, beta"),
           ({"dist": "beta", "alpha": -1, "beta": 3}, "alpha = -1 is not valid"),
           ({"dist": "lognormal", "mu": 0.0, "sigma": "x"}, "sigma = 'x' is not valid"),
           ({"dist": "uniform", "lower": 0.5, "upper": 2.0}, "0 <= lower < upper <= 1.5"),
           ({"dist": "lognormal", "mu": 0.0, "sigma": 1.0}, "of its mass outside (0, 1.5]"),
           ({"dist": "normal", "mu": 0.1, "sigma": 0.2}, "of its mass outside (0, 1.5]"),
           ("beta", "it must be a table")]
    for raw, message in bad:
        with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            parse_dist(raw, "method.m.epm.w4")
    # a log-normal just inside the tolerance is accepted, just outside it is not
    sigma = 0.2
    mu_ok = math.log(1.5) - 2.4 * sigma  # P(rho > 1.5) = 0.8%
    assert parse_dist({"dist": "lognormal", "mu": mu_ok, "sigma": sigma}, "x").mass_outside() < MASS_TOLERANCE
    with pytest.raises(InvalidInputError, match="at most 1% allowed"):
        parse_dist({"dist": "lognormal", "mu": math.log(1.5) - 2.0 * sigma, "sigma": sigma}, "x")


def test_dist_quantiles_match_sampling():
    """The quantiles a query is compared with are those of the distribution the model samples."""
    import pymc as pm

    for raw in ({"dist": "beta", "alpha": 18, "beta": 3}, {"dist": "logitnormal", "mu": 1.0, "sigma": 0.5},
                {"dist": "lognormal", "mu": -0.2, "sigma": 0.1}, {"dist": "normal", "mu": 0.8, "sigma": 0.1},
                {"dist": "uniform", "lower": 0.2, "upper": 0.9}):
        d = parse_dist(raw, "x")
        with pm.Model():
            rv = d.pymc("rho")
        draws = pm.draw(rv, 20_000, random_seed=1)
        np.testing.assert_allclose(np.quantile(draws, [0.05, 0.5, 0.95]), d.quantiles(), atol=0.01)


# ------------------------------------------------------------------------------------ literature
def test_literature_table_covers_the_families_with_sources():
    families = {e.family for e in LITERATURE}
    assert {"weight-only integer", "weights+activations integer", "unstructured sparsity", "2:4 sparsity"} <= families
    for e in LITERATURE:
        assert 0 < e.low < e.epm < e.high <= 1.5 and e.source and "arXiv" in e.source
        assert 0.02 < e.sigma < 0.5  # a 90% interval read as a log-normal


def test_literature_enters_only_formats_in_the_fit():
    from bayes_epm.model import Priors, build_model
    from bayes_epm.simulate import Truth, simulate_runs

    truth = Truth(epm={"dense": 1.0, "s0.5": 0.8, "s0.5-w4a4": 0.6})
    runs = simulate_runs(truth, [1e7, 1e8], [10, 40], list(truth.epm), np.random.default_rng(0))
    on = build_model(runs, Priors())
    off = build_model(runs, Priors(methods=PriorSet(literature=False)))
    assert "literature" in on.named_vars and "literature" not in off.named_vars
    # the s0.5 entry is there; the combined format has none; w4a4 alone is not a format of these runs
    point = on.initial_point()
    lit, log_rho = on.compile_fn([on["literature"], on["log_rho"]], inputs=on.value_vars,
                                 on_unused_input="ignore")(point)
    entry = next(e for e in LITERATURE if e.format == "s0.5")  # the only format of the runs in the table
    i = list(on.coords["fmt"]).index("s0.5")
    expected = -0.5 * ((log_rho[i] - entry.mu) / entry.sigma) ** 2 - math.log(entry.sigma * math.sqrt(2 * math.pi))
    assert np.isclose(lit, expected)


# ------------------------------------------------------------------------------------ prior files
def test_prior_file_with_a_callable_quantizer(tmp_path):
    ps = load_prior_file(_write(tmp_path, GOOD))
    m = ps.method("mxq")
    assert m.kind == "quantizer" and m.callable.endswith("quant.py:mxq") and Path(m.callable.split(":")[0]).is_absolute()
    assert [lp.level for lp in ps.levels] == ["w4:mxq", "a4:mxq"]
    bits = [b for b, _, _ in m.gmse]
    assert bits == list(range(1, 9))
    g = {b: (v, se) for b, v, se in m.gmse}
    assert all(g[b][0] > g[b + 1][0] for b in range(2, 8))  # more bits, less error
    assert all(se / v < 0.01 for v, se in g.values())  # the stated Monte Carlo error is small
    # registered (by whoever accepts the set): usable in formats, trainable, with the measured GMSE
    from bayes_epm.models.formats import Format

    assert "mxq" not in quantize.known_quantizers()  # loading a file registers nothing
    register(ps)
    assert Format.parse("w4a4:mxq").quantizer == "mxq" and "mxq" in quantize.QUANTIZERS


def test_gmse_of_a_callable_equals_the_same_quantizer_built_in(tmp_path):
    """A callable that re-implements absmax gets absmax's GMSE (same seeded draws) and its prior
    EPM from the capacity curve rises with the bits."""
    from bayes_epm.gmse import quantizer_gmse
    from bayes_epm.model import Priors
    from bayes_epm.priors import show

    ps = load_prior_file(_write(tmp_path, '[method.absq]\nkind = "quantizer"\n[method.absq.gmse]\n'
                                          'quantizer = "quant.py:absmax_copy"\n'))
    m = ps.method("absq")
    for bits, g, se in m.gmse:
        if bits >= 2:
            ref, ref_se = quantizer_gmse("absmax", bits)
            assert abs(g - ref) <= 3 * max(se, ref_se) + 1e-6 * ref
    p = Priors()
    shown = show(ps, "absq", {"F_mu": p.F_mu, "C_mu": p.C_mu, "curve_sigma": p.curve_sigma,
                              "level_sigma": p.level_sigma, "quantizer_sigma": p.quantizer_sigma})
    medians = [row["epm_on_curve_prior_5_50_95"][1] for row in shown["gmse"] if row["bits"] >= 2]
    assert all(a < b for a, b in zip(medians, medians[1:])) and 0 < medians[0] < medians[-1] <= 1.0


BAD_FILES = {
    "unknown distribution": ('[method.m]\nkind = "quantizer"\n[method.m.epm]\nw4 = { dist = "gamma", a = 2 }\n',
                             "unknown distribution 'gamma'"),
    "invalid parameter": ('[method.m]\nkind = "quantizer"\n[method.m.epm]\nw4 = { dist = "beta", alpha = 0, beta = 3 }\n',
                          "alpha = 0 is not valid"),
    "mass outside": ('[method.m]\nkind = "quantizer"\n[method.m.epm]\nw4 = { dist = "lognormal", mu = 0.3, sigma = 0.5 }\n',
                     "of its mass outside"),
    "unimportable callable": ('[method.m]\nkind = "quantizer"\n[method.m.gmse]\nquantizer = "no_such_pkg.q:f"\n',
                              "cannot be imported"),
    "missing function": ('[method.m]\nkind = "quantizer"\n[method.m.gmse]\nquantizer = "quant.py:nope"\n',
                         "has no callable 'nope'"),
    "wrong shape": ('[method.m]\nkind = "quantizer"\n[method.m.gmse]\nquantizer = "quant.py:wrong_shape"\n',
                    "must return a finite tensor"),
    "raising callable": ('[method.m]\nkind = "quantizer"\n[method.m.gmse]\nquantizer = "quant.py:broken"\n',
                         "failed on a"),
    "missing study": ('[method.m]\nkind = "quantizer"\n[method.m.from_posterior]\nstudy = "no/such/study"\n',
                      "no study or fitted posterior"),
    "level of another kind": ('[method.m]\nkind = "sparsifier"\n[method.m.epm]\nw4 = { dist = "beta", alpha = 2, beta = 2 }\n',
                              "'w4' is not a level of a sparsifier"),
    "dotted key": ('[method.m]\nkind = "sparsifier"\n[method.m.epm]\ns0.5 = { dist = "beta", alpha = 2, beta = 2 }\n',
                   'quote it, "s0.5" = { ... }'),
    "sparsifier missing the fraction": ('[method.m]\nkind = "sparsifier"\n[method.m.gmse]\n'
                                        'sparsifier = "quant.py:prunes_too_little"\n', "must zero the fraction"),
    "wrong callable key": ('[method.m]\nkind = "sparsifier"\n[method.m.gmse]\nquantizer = "quant.py:rowwise"\n',
                           "takes one key, sparsifier ="),
    "combined level": ('[method.m]\nkind = "quantizer"\n[method.m.epm]\nw4a4 = { dist = "beta", alpha = 2, beta = 2 }\n',
                       "give w4 and a4"),
    "built-in gmse": ('[method.rms]\nkind = "quantizer"\n[method.rms.gmse]\nquantizer = "quant.py:mxq"\n',
                      "built-in quantizer"),
    "unknown key": ('[method.m]\nkind = "quantizer"\nepms = 1\n', "unknown key"),
    "no prior": ('[method.m]\nkind = "quantizer"\n', "gives no prior"),
    "not toml": ('[method.m\n', "not valid TOML"),
    "a level twice": ('[method.m]\nkind = "sparsifier"\n[method.m.epm]\n"s0.5" = { dist = "beta", alpha = 2, beta = 2 }\n'
                      '"s0.50" = { dist = "beta", alpha = 3, beta = 2 }\n', "more than one prior"),
}


def _tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def _study_template(tmp_path_factory):
    """A simulated study with a fit (dense, s0.5 and w4a4 runs), made through the sweep's own calls."""
    from bayes_epm.store import Study
    from bayes_epm.sweep import fit_study

    tmp_path = tmp_path_factory.mktemp("template")

    (tmp_path / "truth.toml").write_text('[law]\nE = 1.8\nA = 480.0\nB = 2000.0\nalpha = 0.34\nbeta = 0.36\n'
                                         'noise_sd = 0.01\n[epm]\n"s0.5" = 0.8\nw4a4 = 0.75\n')
    (tmp_path / "study.toml").write_text('''seed = 0
[space]
formats = ["dense", "s0.5", "w4a4"]
params = [1e7, 1e9]
tokens_per_param = [10, 20, 40]
[budget]
flops = 1e21
[backend]
kind = "simulate"
truth = "truth.toml"
[fit]
draws = 500
tune = 500
chains = 2
''')
    study = tmp_path / "study"
    with Study.create(study, tmp_path / "study.toml") as st:
        from bayes_epm.acquisition import initial_design
        from bayes_epm.lab import simulate_run
        from bayes_epm.sweep import _truth

        truth = _truth(st.config)
        specs = [{**d, "seed": i} for i, d in enumerate(initial_design(st.config.space))] * 2
        ids = st.propose(specs, iteration=0, scores=[None] * len(specs), costs=[1.0] * len(specs))
        for i, spec in zip(ids, specs):
            st.mark_running(i)
            st.record(i, simulate_run(truth, spec, 0, i))
        fit_study(st)
    return study


@pytest.fixture()
def study_dir(_study_template, tmp_path):
    """A copy of the template study for one test to change."""
    import shutil

    return Path(shutil.copytree(_study_template, tmp_path / "study"))


def test_every_bad_prior_file_is_rejected_with_the_study_untouched(study_dir, tmp_path, capsys):
    before = _tree_digest(study_dir)
    for what, (text, message) in BAD_FILES.items():
        path = _write(tmp_path, text, f"bad_{what.replace(' ', '_')}.toml")
        with pytest.raises(SystemExit) as exit_info:
            main(["priors", "import", str(study_dir), str(path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, what
        assert message in err and err.count("\n") == 1, (what, err)
        assert _tree_digest(study_dir) == before, what
        assert "m" not in quantize.known_quantizers(), what  # nothing half-registered either
        assert "m" not in known_sparsifiers(), what


def test_import_list_show_and_query_from_the_prior(study_dir, tmp_path, capsys):
    """The imported prior answers a query on a format of the method with no runs, exactly."""
    from bayes_epm.priors import Dist

    path = _write(tmp_path, GOOD)
    with pytest.raises(SystemExit) as e:
        main(["priors", "import", str(study_dir), str(path), "--json"])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out)["imported"][0]["name"] == "mxq"
    with pytest.raises(SystemExit):  # importing the same method again needs --replace
        main(["priors", "import", str(study_dir), str(path)])
    assert "--replace" in capsys.readouterr().err

    with pytest.raises(SystemExit) as e:
        main(["priors", "list", str(study_dir), "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed["methods"]] == ["mxq"] and listed["literature_enabled"]
    assert {e["name"] for e in listed["literature"]} >= {"w4", "w4a4", "s0.5", "2:4"}
    assert all(e["source"] for e in listed["literature"])

    with pytest.raises(SystemExit) as e:
        main(["priors", "show", str(study_dir), "mxq", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert [lv["level"] for lv in shown["levels"]] == ["w4:mxq", "a4:mxq"]
    assert len(shown["gmse"]) == 8 and all(g["se"] > 0 for g in shown["gmse"])
    with pytest.raises(SystemExit) as e:
        main(["priors", "show", str(study_dir), "s0.5", "--json"])
    assert "arXiv" in json.loads(capsys.readouterr().out)["source"]
    with pytest.raises(SystemExit) as e:
        main(["priors", "show", str(study_dir), "nope"])
    assert e.value.code == 2

    # the saved fit predates the import: the study's priors answer for w4:mxq, from the prior
    with pytest.raises(SystemExit) as e:
        main(["epm", str(study_dir), "--format", "w4:mxq", "--json", "--hdi", "0.9"])
    got = json.loads(capsys.readouterr().out)
    assert e.value.code == 0 and got["source"] == "prior" and got["observed"] is False
    beta = Dist("beta", (("alpha", 18.0), ("beta", 3.0)))
    assert abs(got["mean"] - 18 / 21) < 0.01 and abs(got["sd"] - beta.scipy().std()) < 0.01

    # refitted with the priors (as the sweep does), the level is in the model and still the prior
    from bayes_epm.queries import epm_draws, epm_source
    from bayes_epm.store import Study
    from bayes_epm.sweep import fit_study

    with Study.open(study_dir) as st:
        idata, diag = fit_study(st)
        priors = st.priors
    assert "w4:mxq" in idata.posterior.coords["weights_level"].values
    draws, observed = epm_draws(idata, "w4:mxq", priors)
    assert not observed and epm_source(idata, "w4:mxq", priors) == "prior"
    np.testing.assert_allclose(np.quantile(draws, [0.05, 0.5, 0.95]), beta.quantiles(), atol=0.02)
    # a level of the method without a prior of its own is placed by its GMSE: the hierarchy
    assert epm_source(idata, "w3:mxq", priors) == "hierarchy"
    assert epm_source(idata, "w4a4:mxq", priors) == "prior"  # both levels have priors, no runs
    assert epm_source(idata, "s0.5", priors) == "posterior"


def test_study_config_names_a_prior_file(tmp_path):
    """A space may name a new method's formats: the config's [priors] file is read first."""
    from bayes_epm.store import PRIORS, Study

    prior = _write(tmp_path, GOOD)
    (tmp_path / "truth.toml").write_text('[law]\nE = 1.8\nA = 480.0\nB = 2000.0\nalpha = 0.34\nbeta = 0.36\n'
                                         'noise_sd = 0.01\n[epm]\n"w4:mxq" = 0.85\n')
    (tmp_path / "study.toml").write_text(f'''[space]
formats = ["dense", "w4:mxq"]
params = [1e7, 1e9]
tokens_per_param = [10, 40]
[budget]
flops = 1e21
[backend]
kind = "simulate"
truth = "truth.toml"
[priors]
file = "{prior.name}"
literature = false
''')
    with Study.create(tmp_path / "s", tmp_path / "study.toml") as st:
        assert st.config.space.formats == ["dense", "w4:mxq"] and not st.config.priors.literature
    saved = json.loads((tmp_path / "s" / PRIORS).read_text())
    assert saved["methods"][0]["name"] == "mxq" and saved["imports"][0]["sha256"]
    quantize.unregister_method_quantizer("mxq")  # a new process: the study's priors.json registers it
    (tmp_path / "quant.py").unlink()  # ... even where the callable is gone (then it cannot be trained)
    with Study.open(tmp_path / "s") as st:
        assert st.config.space.formats == ["dense", "w4:mxq"]
        assert "mxq" in quantize.known_quantizers() and "mxq" not in quantize.QUANTIZERS
    from bayes_epm.errors import CompressionError
    from bayes_epm.models.compress import compress_
    import torch

    with pytest.raises(CompressionError, match="not importable here"):
        compress_(torch.nn.Sequential(torch.nn.Linear(8, 8)), "w4:mxq")


def test_callable_quantizer_trains_with_a_straight_through_gradient(tmp_path):
    import torch

    from bayes_epm.models.compress import compress_

    register(load_prior_file(_write(tmp_path, GOOD)))
    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    compress_(model, "w4a4:mxq")
    x = torch.randn(4, 64, requires_grad=True)
    y = model(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ previous posterior
def test_prior_from_a_previous_posterior_keeps_the_correlations(tmp_path):
    """A study fitted with runs of mxq gives a joint normal over the law and mxq's levels whose
    correlations are those of its draws; a model built with it draws them back, correlated."""
    import pymc as pm

    from bayes_epm.inference import fit
    from bayes_epm.model import Priors, build_model
    from bayes_epm.posterior_store import save_fit
    from bayes_epm.simulate import Truth, simulate_runs

    ps = load_prior_file(_write(tmp_path, '[method.mxq]\nkind = "quantizer"\n[method.mxq.gmse]\n'
                                          'quantizer = "quant.py:mxq"\n'), literature=False)
    register(ps)
    truth = Truth(epm={"dense": 1.0, "w4:mxq": 0.85, "w3:mxq": 0.7})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 4)), [10, 20, 40], list(truth.epm),
                         np.random.default_rng(1))
    priors = Priors(methods=ps)
    idata, diag = fit(runs, draws=1000, tune=600, chains=2, seed=2, priors=priors)
    assert diag.converged, diag.problems()
    save_fit(tmp_path / "old" / "posterior", idata, runs, diag, priors, {})
    (tmp_path / "old" / "study.toml").write_text("")  # only its posterior/ is read

    quantize.unregister_method_quantizer("mxq")
    joint = posterior_prior(tmp_path / "old", "mxq")
    assert "mxq" not in quantize.known_quantizers()  # reading the draws registers nothing
    register(ps)
    assert joint.names == ("log_A", "log_B", "log_E", "log_alpha", "log_beta", "weights/w3:mxq", "weights/w4:mxq")
    post = idata.posterior
    cols = [np.log(post[v].values.ravel()) for v in ("A", "B", "E", "alpha", "beta")]
    cols += [post["log_rho_weights"].sel(weights_level=lv).values.ravel() for lv in ("w3:mxq", "w4:mxq")]
    expected = np.corrcoef(np.column_stack(cols), rowvar=False)
    np.testing.assert_allclose(joint.correlation(), expected, atol=1e-9)
    assert abs(expected[0, 3]) > 0.5  # log A and alpha: strongly correlated, which independent marginals lose
    assert np.max(np.abs(expected[3, 5:])) > 0.1  # alpha and the EPMs too

    # a new study's model with this prior (and no mxq runs) draws the same joint normal
    new = Priors(methods=PriorSet(methods=ps.methods, joint=joint, literature=False))
    dense = runs[runs["format"] == "dense"]
    model = build_model(dense, new)
    with warnings.catch_warnings():  # the likelihood's Potential is left out on purpose: these are prior draws
        warnings.filterwarnings("ignore", message="The effect of Potentials")
        prior = pm.sample_prior_predictive(draws=8000, model=model, random_seed=3).prior
    got = np.column_stack([np.log(prior["A"].values.ravel()), np.log(prior["alpha"].values.ravel()),
                           prior["log_rho_weights"].sel(weights_level="w4:mxq").values.ravel()])
    want = np.asarray(joint.cov)[np.ix_([0, 3, 6], [0, 3, 6])]
    sd = np.sqrt(np.diag(want))
    np.testing.assert_allclose(np.corrcoef(got, rowvar=False), want / np.outer(sd, sd), atol=0.05)
    assert np.all(np.abs(got.mean(axis=0) - np.asarray(joint.mean)[[0, 3, 6]]) <= 4 * sd / math.sqrt(8000))

    # a fit that predates the joint prior answers for its level from it, conditioned on the fitted law
    from bayes_epm.queries import epm_draws, epm_source

    old_fit = idata  # holds w4:mxq runs; a dense-only fit does not hold the level at all
    dense_fit, _ = fit(dense, draws=500, tune=500, chains=2, seed=4, priors=Priors(methods=PriorSet(literature=False)))
    draws, observed = epm_draws(dense_fit, "w4:mxq", new)
    assert not observed and epm_source(dense_fit, "w4:mxq", new) == "prior"
    prev = np.exp(old_fit.posterior["log_rho_weights"].sel(weights_level="w4:mxq").values.ravel())
    assert abs(np.median(draws) - np.median(prev)) < 0.05 and draws.std() < 1.5 * prev.std() + 0.01


# ------------------------------------------------------------------------------------ sparsifiers
SPARSE = '''
[method.rowmag]
kind = "sparsifier"
[method.rowmag.epm]
"s0.5" = { dist = "beta", alpha = 16, beta = 4 }
[method.rowmag.gmse]
sparsifier = "quant.py:rowwise"
'''


def test_sparsifier_method_gets_formats_gmse_and_trains(tmp_path):
    """A sparsifier from a prior file: formats s<fraction>:<name>, its GMSE (the same as the built-in
    pruning for a callable that re-implements it), a level prior, masks from its zeros in training."""
    import torch

    from bayes_epm.gmse import sparsity_gmse
    from bayes_epm.model import factor_levels
    from bayes_epm.models.compress import compress_, sparsity_schedule
    from bayes_epm.models.formats import Format

    ps = load_prior_file(_write(tmp_path, SPARSE))
    register(ps)
    m = ps.method("rowmag")
    assert m.kind == "sparsifier" and [lp.level for lp in ps.levels] == ["s0.5:rowmag"]
    f = Format.parse("s0.5:rowmag-w4")
    assert f.name == "s0.5:rowmag-w4" and Format.parse(f.name) == f and factor_levels(f)["sparsity"] == "s0.5:rowmag"
    assert Format.parse("s0.5:magnitude").name == "s0.5"
    with pytest.raises(InvalidInputError, match="prunes unstructured sparsity only"):
        Format(sparsity=0.5, pattern="2:4", sparsifier="rowmag")
    table = m.gmse_table()
    assert 0.5 in table and table[0.5][0] > sparsity_gmse(0.5, "unstructured")[0]  # per row is worse than global

    same = load_prior_file(_write(tmp_path, '[method.magcopy]\nkind = "sparsifier"\n[method.magcopy.gmse]\n'
                                            'sparsifier = "quant.py:magnitude_copy"\n', "copy.toml"))
    for s, g, se in same.method("magcopy").gmse:
        ref, _ = sparsity_gmse(s, "unstructured")
        assert abs(g - ref) <= 1e-9 + 1e-6 * ref, s  # the same choice on the same seeded draws

    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    layers = compress_(model, "s0.5:rowmag")
    schedule = sparsity_schedule(layers, Format.parse("s0.5:rowmag"), total_steps=100)
    schedule.finalize()
    zeros_per_row = (model[0].weight_orig * model[0].weight_mask == 0).sum(dim=1)
    assert schedule.achieved() == 0.5 and bool((zeros_per_row == 32).all())  # the callable's choice: per row


def test_sparsifier_prior_in_a_fit(tmp_path):
    """The level prior of a sparsifier answers a query on it before any run; its other levels are
    placed by GMSE; runs of one of its levels give a posterior."""
    from bayes_epm.inference import fit
    from bayes_epm.model import Priors
    from bayes_epm.queries import epm, epm_source
    from bayes_epm.simulate import Truth, simulate_runs

    ps = load_prior_file(_write(tmp_path, SPARSE), literature=False)
    register(ps)
    truth = Truth(epm={"dense": 1.0, "s0.75:rowmag": 0.55})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 4)), [10, 20, 40], list(truth.epm),
                         np.random.default_rng(0))
    priors = Priors(methods=ps)
    idata, diag = fit(runs, draws=1000, tune=600, chains=2, seed=1, priors=priors)
    assert diag.converged, diag.problems()
    assert epm_source(idata, "s0.5:rowmag", priors) == "prior"
    assert epm_source(idata, "s0.875:rowmag", priors) == "hierarchy"
    got = epm(idata, "s0.75:rowmag", 0.9, priors)
    assert got["source"] == "posterior" and got["hdi_90"][0] <= 0.55 <= got["hdi_90"][1]
    prior = epm(idata, "s0.5:rowmag", 0.9, priors)
    assert abs(prior["mean"] - 0.8) < 0.01  # beta(16, 4)


def test_level_keys_are_normalised_and_magnitude_priors_replace_the_literature(tmp_path):
    from bayes_epm.model import Priors, build_model
    from bayes_epm.simulate import Truth, simulate_runs

    ps = load_prior_file(_write(tmp_path, '[method.m]\nkind = "quantizer"\n[method.m.epm]\n'
                                          'w04 = { dist = "beta", alpha = 8, beta = 2 }\n'))
    assert [lp.level for lp in ps.levels] == ["w4:m"]  # the level formats use, not "w04:m"
    ps = load_prior_file(_write(tmp_path, '[method.magnitude]\nkind = "sparsifier"\n[method.magnitude.epm]\n'
                                          '"s0.5" = { dist = "beta", alpha = 16, beta = 4 }\n'
                                          '"2:4" = { dist = "beta", alpha = 12, beta = 6 }\n', "mag.toml"))
    assert [lp.level for lp in ps.levels] == ["s0.5", "2:4"]  # the built-in pruning's own levels
    truth = Truth(epm={"dense": 1.0, "s0.5": 0.8})
    runs = simulate_runs(truth, [1e7, 1e8], [10, 40], list(truth.epm), np.random.default_rng(0))
    model = build_model(runs, Priors(methods=ps))
    assert "rho_sparsity_s0_5" in model.named_vars and "rho_sparsity_2_4" in model.named_vars
    assert "literature" not in model.named_vars  # the user's prior on s0.5 supersedes the table's


def test_replacing_a_method_measures_its_new_callable(study_dir, tmp_path, capsys):
    from bayes_epm.gmse import quantizer_gmse

    main_args = ["priors", "import", str(study_dir)]
    with pytest.raises(SystemExit) as e:
        main([*main_args, str(_write(tmp_path, GOOD))])
    assert e.value.code == 0
    other = '[method.mxq]\nkind = "quantizer"\n[method.mxq.gmse]\nquantizer = "quant.py:absmax_copy"\n'
    with pytest.raises(SystemExit) as e:
        main([*main_args, str(_write(tmp_path, other, "other.toml")), "--replace"])
    assert e.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["priors", "show", str(study_dir), "mxq", "--json"])
    shown = json.loads(capsys.readouterr().out)
    at4 = next(g for g in shown["gmse"] if g["bits"] == 4)
    assert abs(at4["gmse"] - quantizer_gmse("absmax", 4)[0]) < 1e-9 and shown["levels"] == []
    assert shown["callable"].endswith("quant.py:absmax_copy")
