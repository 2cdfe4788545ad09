"""The flow toolkit against independent computations: autodiff Jacobians, slogdet,
scipy's multivariate normal, quadrature and finite differences."""

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pwavenet import flows


def _randomize(params, rng, scale=1.0):
    """Replaces every parameter with N(0, scale^2) draws, so tests do not sit at the init."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(rng, len(leaves))
    new = [scale * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, new)


def _set_planar_wr(params, wr):
    """Sets the raw r so that w^T r == wr exactly (e.g. far below the -1 bound)."""
    p = jax.tree_util.tree_map(lambda v: v, params)
    w, r = p["params"]["w"], p["params"]["r"]
    r = r - (jnp.dot(w, r) - wr) * w / jnp.dot(w, w)
    p["params"]["r"] = r
    return p


def _layer_cases():
    # (name, module factory(d), input sampler(rng, shape)) for each layer.
    normal = lambda rng, shape: jax.random.normal(rng, shape)
    unit = lambda rng, shape: jax.random.uniform(rng, shape, minval=0.02, maxval=0.98)
    return [
        ("affine", lambda d: flows.Affine(d), normal, normal),
        ("affine_perm", lambda d: flows.Affine(d, permutation_seed=3), normal, normal),
        ("elementwise", lambda d: flows.ElementwiseAffine(d), normal, normal),
        ("sigmoid", lambda d: flows.Sigmoid(), normal, unit),
        ("planar", lambda d: flows.Planar(d), normal, normal),
    ]


CASES = _layer_cases()


def _init(module, d, seed, planar_wr=None):
    rng = jax.random.PRNGKey(seed)
    params = module.init(rng, jnp.zeros((1, d)))
    # Entries of std 1/sqrt(d) keep random triangular factors well conditioned at every d, so
    # float32 round trips can be held to 1e-5.
    params = _randomize(params, jax.random.fold_in(rng, 1), 1.0 / np.sqrt(d))
    if planar_wr is not None:
        params = _set_planar_wr(params, planar_wr)
    return params


@pytest.mark.parametrize("name,make,sample_u,sample_x", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("d,seed", [(1, 0), (2, 1), (3, 2), (5, 3)])
def test_log_det_equals_slogdet_of_autodiff_jacobian(name, make, sample_u, sample_x, d, seed):
    with jax.enable_x64(True):
        module = make(d)
        params = _init(module, d, seed)
        u = sample_u(jax.random.PRNGKey(100 + seed), (7, d)).astype(jnp.float64)
        fwd = lambda v: module.apply(params, v, method=module.forward_and_log_det)
        x, log_det = fwd(u)
        jac = jax.vmap(jax.jacfwd(lambda v: fwd(v)[0]))(u)
        sign, ref = jnp.linalg.slogdet(jac)
        np.testing.assert_allclose(log_det, ref, rtol=1e-9, atol=1e-9)

        # The inverse's log-det is the slogdet of the inverse's own Jacobian.
        xs = sample_x(jax.random.PRNGKey(200 + seed), (7, d)).astype(jnp.float64)
        inv = lambda v: module.apply(params, v, method=module.inverse_and_log_det)
        _, inv_log_det = inv(xs)
        inv_jac = jax.vmap(jax.jacfwd(lambda v: inv(v)[0]))(xs)
        np.testing.assert_allclose(
            inv_log_det, jnp.linalg.slogdet(inv_jac)[1], rtol=1e-8, atol=1e-8
        )


@pytest.mark.parametrize("name,make,sample_u,sample_x", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("d,seed", [(1, 4), (2, 5), (4, 6), (16, 7)])
def test_inverse_round_trips(name, make, sample_u, sample_x, d, seed):
    """float32, as used in training: inverse(forward(u)) == u and forward(inverse(x)) == x."""
    module = make(d)
    params = _init(module, d, seed)
    fwd = lambda v: module.apply(params, v, method=module.forward_and_log_det)
    inv = lambda v: module.apply(params, v, method=module.inverse_and_log_det)
    u = sample_u(jax.random.PRNGKey(seed), (3, 5, d))  # two leading batch axes
    x, ld_fwd = fwd(u)
    u_back, ld_inv = inv(x)
    np.testing.assert_allclose(u_back, u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld_inv, -ld_fwd, rtol=1e-5, atol=1e-4)
    xs = sample_x(jax.random.PRNGKey(seed + 1), (3, 5, d))
    x_back, _ = fwd(inv(xs)[0])
    np.testing.assert_allclose(x_back, xs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wr", [-1.0, -5.0, -40.0, -1e3, 0.5, 30.0])
def test_planar_constraint_and_inverse_for_extreme_raw_parameters(wr):
    """Raw w^T r far below -1 still gives an invertible layer with w^T r_hat > -1."""
    d = 3
    module = flows.Planar(d)
    params = _init(module, d, seed=11, planar_wr=wr)
    w, r = params["params"]["w"], params["params"]["r"]
    r_hat = flows.constrained_direction(w, r)
    with jax.enable_x64(True):
        w64, r64 = np.asarray(w, np.float64), np.asarray(r, np.float64)
        wr_hat = np.dot(w64, np.asarray(flows.constrained_direction(w64, r64)))
        assert wr_hat > -1.0
        # Independent closed form of the constraint: -1 + log(1 + e^{w^T r}).
        np.testing.assert_allclose(
            wr_hat, -1.0 + np.logaddexp(0.0, np.dot(w64, r64)), rtol=1e-9, atol=1e-12
        )

    # Inputs spread along w, where the layer is most nonlinear. In float32 the solver's
    # backward error is checked: forward(inverse(x)) == x to 1e-5 relative. Near w^T r_hat = -1
    # the map is nearly flat around its stationary point, so inverse(forward(u)) == u is
    # ill-conditioned by construction (float32 rounding of x is amplified by 1/slope); that
    # direction is checked in float64, where the same solver must reach 1e-5 relative easily.
    fwd = lambda p, v: module.apply(p, v, method=module.forward_and_log_det)
    inv = lambda p, v: module.apply(p, v, method=module.inverse_and_log_det)
    u = jax.random.normal(jax.random.PRNGKey(0), (64, d)) * 3.0
    x, ld = fwd(params, u)
    assert np.all(np.isfinite(ld))
    x_back, _ = fwd(params, inv(params, x)[0])
    x_scale = np.maximum(np.abs(np.asarray(x)), np.linalg.norm(np.asarray(r_hat)))
    assert np.max(np.abs(x_back - x) / x_scale) < 1e-5
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
        u64 = jnp.asarray(u, jnp.float64)
        u_back, _ = inv(params64, fwd(params64, u64)[0])
        u_scale = np.maximum(np.abs(np.asarray(u64)), np.linalg.norm(np.asarray(r_hat)))
        assert np.max(np.abs(np.asarray(u_back) - np.asarray(u64)) / u_scale) < 1e-5


def test_planar_inverse_gradients_match_finite_differences():
    """Implicit gradients of the numerical inverse, checked by central differences."""
    d = 3
    module = flows.Planar(d)
    with jax.enable_x64(True):
        params = _init(module, d, seed=21)
        params = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), params)
        x = jax.random.normal(jax.random.PRNGKey(1), (9, d), jnp.float64)

        def objective(p):
            u, log_det = module.apply(p, x, method=module.inverse_and_log_det)
            return jnp.sum(jnp.sin(u)) + jnp.sum(log_det)

        grads = jax.grad(objective)(params)
        flat, unravel = ravel_pytree(params)
        eps = 1e-6
        numeric = np.array(
            [
                (objective(unravel(flat.at[i].add(eps))) - objective(unravel(flat.at[i].add(-eps))))
                / (2 * eps)
                for i in range(flat.size)
            ]
        )
        np.testing.assert_allclose(ravel_pytree(grads)[0], numeric, rtol=1e-6, atol=1e-7)


def test_affine_flow_is_the_gaussian_with_covariance_a_a_transpose():
    """x = A u + b, u ~ N(mu, sigma^2 I) => x ~ N(A mu + b, sigma^2 A A^T)."""
    d = 3
    flow = flows.Flow(flows.GaussianBase(d), flows.Chain([flows.Affine(d, permutation_seed=1)]))
    params = _randomize(
        flow.init(jax.random.PRNGKey(0), jnp.zeros((1, d))), jax.random.PRNGKey(2), 0.5
    )
    p = params["params"]
    affine = flows.Affine(d, permutation_seed=1)
    a = np.asarray(
        affine.apply({"params": p["chain"]["layers_0"]}, method=affine.matrix), np.float64
    )
    b = np.asarray(p["chain"]["layers_0"]["shift"], np.float64)
    mu = np.asarray(p["base"]["loc"], np.float64)
    sigma2 = float(np.exp(2 * p["base"]["log_sigma"]))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (20, d)))
    ours = flow.apply(params, jnp.asarray(x), method=flow.log_prob)
    ref = stats.multivariate_normal(a @ mu + b, sigma2 * a @ a.T).logpdf(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def _grid_integral(flow, params, lo, hi, n):
    """Midpoint rule over [lo, hi]^2 with n cells per axis."""
    h = (hi - lo) / n
    centers = lo + h * (np.arange(n) + 0.5)
    xx, yy = np.meshgrid(centers, centers, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    log_p = jax.jit(lambda v: flow.apply(params, v, method=flow.log_prob))(pts)
    return float(np.sum(np.exp(np.asarray(log_p, np.float64))) * h * h)


def test_planar_flow_density_integrates_to_one():
    # Base N(0, 1); each planar layer moves points by at most ||r_hat|| <= ~1.5 here, so the
    # mass outside [-9, 9]^2 is below a 2-D standard normal's mass beyond radius ~5 (< 1e-5).
    # The midpoint rule's error for this smooth density at h = 0.03 is O(h^2 max|f''|) ~ 1e-4.
    # Tolerance 2e-3 is 20x that bound and still rules out any missing log-det term
    # (each is an O(1) factor).
    d = 2
    chain = flows.Chain([flows.Planar(d) for _ in range(4)])
    flow = flows.Flow(flows.GaussianBase(d, learnable=False), chain)
    params = _randomize(
        flow.init(jax.random.PRNGKey(0), jnp.zeros((1, d))), jax.random.PRNGKey(5), 0.8
    )
    assert abs(_grid_integral(flow, params, -9.0, 9.0, 600) - 1.0) < 2e-3


def test_sigmoid_box_flow_density_integrates_to_one():
    # Affine -> Sigmoid -> fixed map onto the box [-2, 3] x [-1, 1]: all mass lies in the box,
    # and the density vanishes at its edges faster than any polynomial (Gaussian tails in logit
    # space), so the midpoint rule on the box converges at O(h^2); 2e-3 as above.
    d = 2
    lo, hi = np.array([-2.0, -1.0]), np.array([3.0, 1.0])
    chain = flows.Chain(
        [
            flows.Affine(d),
            flows.Sigmoid(),
            flows.ElementwiseAffine(d, scale=tuple(hi - lo), shift=tuple(lo)),
        ]
    )
    flow = flows.Flow(flows.GaussianBase(d), chain)
    params = _randomize(
        flow.init(jax.random.PRNGKey(0), jnp.full((1, d), 0.5)), jax.random.PRNGKey(6), 0.4
    )
    n = 600
    h = (hi - lo) / n
    cx = lo[0] + h[0] * (np.arange(n) + 0.5)
    cy = lo[1] + h[1] * (np.arange(n) + 0.5)
    xx, yy = np.meshgrid(cx, cy, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    log_p = flow.apply(params, pts, method=flow.log_prob)
    total = float(np.sum(np.exp(np.asarray(log_p, np.float64))) * h[0] * h[1])
    assert abs(total - 1.0) < 2e-3


def test_sample_log_prob_matches_log_prob_through_the_inverse():
    d = 2
    chain = flows.Chain([flows.Affine(d), flows.Planar(d), flows.Planar(d)])
    flow = flows.Flow(flows.GaussianBase(d), chain)
    params = _randomize(
        flow.init(jax.random.PRNGKey(0), jnp.zeros((1, d))), jax.random.PRNGKey(8), 0.7
    )
    x, log_q = flow.apply(params, jax.random.PRNGKey(9), 256, method=flow.sample_and_log_prob)
    np.testing.assert_allclose(
        flow.apply(params, x, method=flow.log_prob), log_q, rtol=1e-4, atol=1e-4
    )


def test_sigmoid_rejects_data_outside_the_open_unit_cube():
    layer = flows.Sigmoid()
    with pytest.raises(ValueError, match=r"open unit cube.*2 of 4 values"):
        layer.apply({}, jnp.array([[0.5, 1.0], [0.0, 0.3]]), method=layer.inverse_and_log_det)
