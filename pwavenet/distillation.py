"""Probability density distillation: the objective alone.

One forward pass, for a batch of mels (and speakers) and the real audio they came from:

  1. z ~ base, one noise sequence per example; the student maps it to x with the per-step
     (M_t, S_t) of p_S(x_t | z_<t) (pwavenet.models.iaf).
  2. The frozen teacher, teacher-forced on x, gives p_T(x_t | x_<t) for every t at once.
  3. KL(P_S || P_T) = H(P_S, P_T) - H(P_S), per sample (nats), from those:
     - entropy, analytic: H(P_S) = E_z[mean_t log S_t] + H(base); no sample of x is needed;
     - cross-entropy, 'monte_carlo': for every step N draws x_t^n = M_t + S_t eps_n
       (reparameterized, so gradients reach M and S) scored under the teacher's step-t
       distribution; they cost distribution evaluations only, no teacher passes. A 16-bit MoL
       teacher is scored as the continuous mixture of logistics it discretizes;
     - 'closed_form' (Gaussian student base and Gaussian teacher): the per-step Gaussian KL,
       with both log-scales floored at distill.log_scale_min, plus the regularizer
       distill.regularizer_weight * (log S_t - log s_T,t)^2 (ClariNet).
     Gradients flow through the teacher into x (its context) but never into its weights.
  4. The power loss: the mean squared difference of STFT magnitudes (not squared, not log)
     of x and the real audio, averaged over the configured resolutions. It is what keeps the
     student from whispering: the KL alone is satisfied by too little energy in voiced sounds.
  5. Optionally a temperature tau (distill.voiced_temperature) on the teacher's Gaussian
     scales in voiced frames (the voicing estimated from the mel): the student then matches
     the teacher sampled at tau there, with less of its noise in voiced sounds.
  6. Optionally the contrastive term: the KL against the teacher under mismatched
     conditioning (each example's mel rolled by half its length in time, its speaker id
     advanced by one; per example, so independent of the device layout), subtracted with
     weight distill.contrastive_weight, so that the student's output must depend on its own
     conditioning.

loss = kl_weight * kl + regularizer_weight * regularizer + power_weight * power
       - contrastive_weight * contrastive_kl; every term is logged on its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from pwavenet.audio import excitation
from pwavenet.models import builders, distributions, iaf
from pwavenet import config_schema

# The data pipeline (TensorFlow, tfds) is imported where datasets are built, so the objective
# and the models import without TensorFlow (the benchmark needs none).

Array = jax.Array

KL_METHODS = ("auto", "closed_form", "monte_carlo")
UPSAMPLER_MODES = ("frozen", "fine_tune", "own")


# ----------------------------------------------------------------------------- the loss


def stft_magnitude(x: Array, n_fft: int, hop: int, win_length: int) -> Array:
    """|STFT| (B, frames, n_fft // 2 + 1) of x (B, T) with a periodic Hann window.

    Frames start every `hop` samples and lie wholly inside x (no padding); the DFT is not
    normalized (a full-scale sinusoid peaks near win_length / 4). The magnitude is
    sqrt(|X|^2 + 1e-9) so its gradient stays finite where |X| = 0.
    """
    if win_length > n_fft:
        raise ValueError(f"STFT win_length={win_length} exceeds n_fft={n_fft}")
    length = x.shape[-1]
    if length < win_length:
        raise ValueError(
            f"audio of {length} samples is shorter than the STFT window ({win_length}); "
            "shorten distill.stft_resolutions or use longer crops (data.crop_samples)"
        )
    frames = 1 + (length - win_length) // hop
    index = hop * jnp.arange(frames)[:, None] + jnp.arange(win_length)[None, :]
    window = 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * jnp.arange(win_length) / win_length)
    spectrum = jnp.fft.rfft(x[..., index] * window, n=n_fft, axis=-1)
    return jnp.sqrt(jnp.square(spectrum.real) + jnp.square(spectrum.imag) + 1e-9)


def power_loss(x: Array, reference: Array, resolutions) -> Array:
    """Mean over resolutions of mean((|STFT x| - |STFT reference|)^2)."""
    return spectral_losses(x, reference, resolutions)["power_loss"]


def spectral_losses(x: Array, reference: Array, resolutions) -> dict[str, Array]:
    """Per batch, means over resolutions of (Parallel WaveGAN's auxiliary losses beside the
    power loss):

      power_loss            mean (|X| - |R|)^2
      spectral_convergence  ||X| - |R||_F / ||R||_F per example, averaged over the batch
      log_magnitude         mean |log |X| - log |R||

    with X, R the STFTs of x and reference (B, T) at each (n_fft, hop, win_length).
    The log-magnitude term weighs quiet bins like loud ones, so it reaches the spectral
    valleys and high bands that the magnitude terms hardly see.
    """
    totals = {"power_loss": 0.0, "spectral_convergence": 0.0, "log_magnitude": 0.0}
    for r in resolutions:
        mx, mr = stft_magnitude(x, *r), stft_magnitude(reference, *r)
        diff = mx - mr
        totals["power_loss"] += jnp.mean(jnp.square(diff))
        num = jnp.sqrt(jnp.sum(jnp.square(diff), axis=(-2, -1)))
        den = jnp.sqrt(jnp.sum(jnp.square(mr), axis=(-2, -1)))
        totals["spectral_convergence"] += jnp.mean(num / den)
        totals["log_magnitude"] += jnp.mean(jnp.abs(jnp.log(mx) - jnp.log(mr)))
    return {k: v / len(resolutions) for k, v in totals.items()}


def teacher_log_density(dist, params: Array, x: Array) -> Array:
    """log p_T(x) as a density in x, differentiable in x, for the continuous or MoL teacher."""
    if isinstance(dist, distributions.DiscretizedMixtureOfLogistics):
        # The continuous mixture of logistics the 16-bit distribution discretizes. (The bin
        # mass over the bin width would match it inside (-1, 1), but the edge bins hold the
        # tails: scored that way the density would not integrate to one, and the KL could
        # be driven negative by samples outside [-1, 1].)
        log_weights, means, log_scales = dist.split_params(params)
        z = (x[..., None] - means) * jnp.exp(-log_scales)
        log_pdf = jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z) - log_scales
        return jax.scipy.special.logsumexp(log_weights + log_pdf, axis=-1)
    if isinstance(dist, distributions.MuLawCategorical):
        raise ValueError(
            "a mu-law softmax teacher cannot be distilled: its probability is piecewise "
            "constant in x, so no gradient reaches the student. Train the teacher with "
            "model.output='mol' or 'gaussian'."
        )
    return dist.log_prob(params, x)


def kl_method(distill_config, student: iaf.IAFStudent, teacher_dist) -> str:
    method = distill_config.kl
    if method not in KL_METHODS:
        raise ValueError(f"distill.kl={method!r}; expected one of {KL_METHODS}")
    gaussian_pair = student.config.base == "gaussian" and isinstance(
        teacher_dist, distributions.Gaussian
    )
    if method == "auto":
        return "closed_form" if gaussian_pair else "monte_carlo"
    if method == "closed_form" and not gaussian_pair:
        raise ValueError(
            "distill.kl='closed_form' needs a Gaussian student (model.base='gaussian') and a "
            f"Gaussian teacher; got base {student.config.base!r} and a "
            f"{type(teacher_dist).__name__} teacher. Use distill.kl='monte_carlo'."
        )
    return method


def kl_terms(
    mu_tot: Array,
    log_s_tot: Array,
    teacher_params: Array,
    teacher_dist,
    student: iaf.IAFStudent,
    eps: Array | None,
    *,
    method: str,
    log_scale_min: float,
) -> dict[str, Array]:
    """Per-sample means of the KL and its parts.

    Args:
      mu_tot, log_s_tot: (B, T) the student's p_S(x_t | z_<t).
      teacher_params: (B, T, P) the teacher's p_T(x_t | x_<t) on the student's sample.
      teacher_dist: the teacher's output family.
      student: for the base distribution.
      eps: (N, B, T) standard base draws for 'monte_carlo' (None for 'closed_form').
      method: 'closed_form' or 'monte_carlo'.
      log_scale_min: floor of both log-scales in the closed form.

    Returns:
      {'kl', 'cross_entropy', 'entropy'} and, for the closed form, 'regularizer'.
    """
    entropy = jnp.mean(log_s_tot) + student.base_entropy()
    if method == "closed_form":
        mu_t, log_s_t = teacher_dist.split_params(teacher_params)
        log_s_s = distributions.clamp_log_scale(log_s_tot, log_scale_min)
        log_s_t = distributions.clamp_log_scale(log_s_t, log_scale_min)
        kl = jnp.mean(distributions.gaussian_kl(mu_tot, log_s_s, mu_t, log_s_t))
        regularizer = jnp.mean(jnp.square(log_s_s - log_s_t))
        return dict(kl=kl, cross_entropy=kl + entropy, entropy=entropy, regularizer=regularizer)
    draws = mu_tot + jnp.exp(log_s_tot) * eps  # (N, B, T)
    log_p = jax.vmap(lambda d: teacher_log_density(teacher_dist, teacher_params, d))(draws)
    cross_entropy = -jnp.mean(log_p)
    return dict(kl=cross_entropy - entropy, cross_entropy=cross_entropy, entropy=entropy)


@dataclasses.dataclass(frozen=True)
class Distiller:
    """The student, the frozen teacher and the objective's settings.

    `teacher_fn(teacher_params, x, batch) -> (B, T, P)` computes the teacher's per-step
    parameters on x, conditioned on the batch's mel and speaker; for the job, the WaveNet
    teacher's teacher-forced pass. Tests
    substitute other teachers (e.g. the student's own conditional).
    """

    student: iaf.IAFStudent
    teacher_dist: Any
    teacher_fn: Any
    config: Any  # the `distill` section
    upsampler: str = "frozen"

    @property
    def method(self) -> str:
        return kl_method(self.config, self.student, self.teacher_dist)

    def noise(self, rngs: Array, length: int) -> tuple[Array, Array | None]:
        """z (B, T) and, for 'monte_carlo', eps (N, B, T); example b's from rngs[b] only."""
        num_draws = self.config.num_draws if self.method == "monte_carlo" else 0

        def one(key):
            kz, ke = jax.random.split(key)
            z = self.student.sample_base(kz, (length,))
            eps = self.student.sample_base(ke, (num_draws, length)) if num_draws else None
            return z, eps

        z, eps = jax.vmap(one)(rngs)
        return z, (None if eps is None else jnp.swapaxes(eps, 0, 1))

    def mismatched(self, batch):
        """Each example's conditioning, made wrong: its mel rolled by half its frames along
        time (another stretch of speech) and its speaker id advanced by one. Built from the
        example alone, so the term is the same however the batch is split over devices."""
        out = dict(batch)
        if "mel" in batch:
            out["mel"] = jnp.roll(batch["mel"], batch["mel"].shape[1] // 2, axis=1)
        if "speaker" in batch and self.student.config.num_speakers > 1:
            out["speaker"] = (batch["speaker"] + 1) % self.student.config.num_speakers
        return out

    def teacher_outputs(self, teacher_params, x: Array, batch) -> Array:
        """The teacher's per-step parameters on x given the batch's conditioning, tempered in
        voiced frames when distill.voiced_temperature != 1 (`tempered`)."""
        out = self.teacher_fn(teacher_params, x, batch)
        if config_schema.setting(self.config, "distill.voiced_temperature") != 1.0:
            mel = batch.get("mel") if self.student.config.n_mels else None
            out = self.tempered(out, mel)
        return out

    def tempered(self, teacher_out: Array, mel: Array) -> Array:
        """The teacher's per-step Gaussians with their scales times
        distill.voiced_temperature ** voicing, the voicing (0..1) estimated from the mel
        (pwavenet.audio.excitation): the student is distilled towards the teacher sampled at
        that temperature in voiced frames, where the teacher's noise is what one hears as
        hoarseness, and at temperature 1 where the mel says unvoiced."""
        tau = self.config.voiced_temperature
        if not isinstance(self.teacher_dist, distributions.Gaussian) or tau <= 0:
            raise ValueError(
                f"distill.voiced_temperature={tau} needs a Gaussian teacher and a value > 0; "
                f"got a {type(self.teacher_dist).__name__} teacher. Set it to 1.0."
            )
        if mel is None or not config_schema.setting(self.student.config, "model.lpc_order"):
            raise ValueError(
                "distill.voiced_temperature reads the voicing from the mel in the synthesis "
                "filter's definition (model.lpc_mel): it needs a mel-conditioned student with "
                "model.lpc_order > 0. Set distill.voiced_temperature=1.0."
            )
        voicing = excitation.excitation_from_mel(
            jax.lax.stop_gradient(mel), self.student.config.lpc_mel, self.student.hop_length
        )[1]
        log_scale = teacher_out[..., 1] + voicing * math.log(tau)
        return jnp.stack([teacher_out[..., 0], log_scale], axis=-1)

    def losses(self, params, teacher_params, batch, rngs) -> tuple[Array, dict[str, Array]]:
        """(loss, metrics) for a batch {'audio', 'mel', 'speaker'} with one key per example."""
        c = self.config
        if self.upsampler == "frozen" and "upsampler" in params:
            params = dict(params, upsampler=jax.lax.stop_gradient(params["upsampler"]))
        audio = batch["audio"]
        mel = batch.get("mel") if self.student.config.n_mels else None
        speaker = batch.get("speaker") if self.student.config.num_speakers else None
        z, eps = self.noise(rngs, audio.shape[1])
        x, mu_tot, log_s_tot = self.student.apply({"params": params}, z, mel, speaker)
        method = self.method
        terms = kl_terms(
            mu_tot,
            log_s_tot,
            self.teacher_outputs(teacher_params, x, batch),
            self.teacher_dist,
            self.student,
            eps,
            method=method,
            log_scale_min=c.log_scale_min,
        )
        loss = config_schema.setting(c, "distill.kl_weight") * terms["kl"]
        if "regularizer" in terms:
            loss = loss + c.regularizer_weight * terms["regularizer"]
        metrics = dict(terms)
        spectral_weight = config_schema.setting(c, "distill.spectral_weight")
        if c.power_weight or spectral_weight:
            spectral = spectral_losses(x, audio, c.stft_resolutions)
            metrics.update(spectral)
            loss = loss + c.power_weight * spectral["power_loss"]
            loss = loss + spectral_weight * (
                spectral["spectral_convergence"] + spectral["log_magnitude"]
            )
        if c.contrastive_weight:
            mismatched = kl_terms(
                mu_tot,
                log_s_tot,
                self.teacher_outputs(teacher_params, x, self.mismatched(batch)),
                self.teacher_dist,
                self.student,
                eps,
                method=method,
                log_scale_min=c.log_scale_min,
            )
            metrics["contrastive_kl"] = mismatched["kl"]
            loss = loss - c.contrastive_weight * mismatched["kl"]
        metrics["student_log_scale"] = jnp.mean(log_s_tot)
        metrics["student_rms"] = jnp.sqrt(jnp.mean(jnp.square(x)))
        metrics["loss"] = loss
        return loss, metrics


def make_distiller(config, student: iaf.IAFStudent, teacher) -> Distiller:
    def teacher_fn(teacher_params, x, batch):
        mel, speaker = builders.model_inputs(teacher.config, batch)
        return teacher.model.apply({"params": teacher_params}, x, mel, speaker)

    return Distiller(
        student=student,
        teacher_dist=teacher.model.distribution,
        teacher_fn=teacher_fn,
        config=config.distill,
        upsampler=config.model.upsampler,
    )
