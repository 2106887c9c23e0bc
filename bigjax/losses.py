"""Big-learning objectives: BigLearn-GAN's Eq. (8), the R1 penalty, the communication matchings of
Eq. (12), and the permutation language-modelling objective Eq. (15).

Pure functions of discriminator logits f(x; S, T) (and, for R1, of a discriminator apply
function), importable without any trainer. Every loss is per example ([B]; `mode_seeking_loss`,
a batch-level estimator, says why it is not); the caller reduces and weights. Written with
`softplus` because log sigma(f) = -softplus(-f) and log sigma(-f) = -softplus(f), which stays
finite for any logit (log(sigmoid(f)) underflows to -inf for f below about -100 in float32).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

__all__ = [
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "communication_discriminator_loss",
    "communication_generator_loss",
    "mode_seeking_loss",
    "reconstruction_loss",
    "reconstruction_counts",
    "permutation_lm",
]


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The discriminator's side of Eq. (8), as a loss to minimise.

  -[log sigma(f(x_real; S, T)) + log sigma(-f(x_fake; S, T))]
    = softplus(-f_real) + softplus(f_fake),
  with x_real = (x_S, x_T) ~ q and x_fake = (x_S, G(x_S, z)) on the same (S, T).

  Args:
    real_logits: [B] f_phi on real data.
    fake_logits: [B] f_phi on generated data (same (S, T) per example).

  Returns:
    [B] per-example losses (>= 0; 2 log 2 when both logits are 0).
  """
  real_logits, fake_logits = jnp.asarray(real_logits), jnp.asarray(fake_logits)
  # [B] against [B, 1] would broadcast to a silent [B, B] loss.
  chex.assert_equal_shape(
      [real_logits, fake_logits],
      custom_message="discriminator_loss: real_logits and fake_logits must have the same shape [B]",
  )
  return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)


def generator_loss(fake_logits: jax.Array, *, saturating: bool = False) -> jax.Array:
  """The generator's side of Eq. (8), as a loss to minimise.

  saturating=True:  log sigma(-f_fake) = -softplus(f_fake), exactly the min over theta of
                    Eq. (8) (its gradient vanishes when D confidently rejects the fakes);
  saturating=False: -log sigma(f_fake) = softplus(-f_fake), the usual non-saturating form of
                    Goodfellow et al. (2014), same fixed point, strong early gradients.

  Args:
    fake_logits: [B] f_phi on generated data.
    saturating: which form (keyword-only).

  Returns:
    [B] per-example losses.
  """
  if saturating:
    return -jax.nn.softplus(fake_logits)
  return jax.nn.softplus(-fake_logits)


def r1_penalty(
    logits_fn: Callable[[jax.Array], jax.Array], real_inputs: jax.Array, *, weight: float
) -> tuple[jax.Array, jax.Array]:
  """R1 gradient penalty on real data (Mescheder et al., 2018, Eq. (9)): (weight / 2) ||grad||^2.

  The gradient is taken with respect to the discriminator's *input* (the real patches), not its
  parameters; differentiating the returned penalty with respect to the parameters is therefore
  second order (grad of grad through attention), which plain `jax.numpy` attention supports.

  `logits_fn` must treat examples independently (no batch statistics), so that the gradient of
  the summed logits with respect to the batch is the stack of per-example input gradients.

  Args:
    logits_fn: maps inputs [B, ...] to logits [B] (e.g. the discriminator with its parameters
      and (S, T) masks bound).
    real_inputs: [B, ...] real data, e.g. patches [B, L, P].
    weight: lambda (Table 2: 10 for MNIST, 50 for CelebA); keyword-only.

  Returns:
    (penalty [B] = weight / 2 * ||d f / d x||^2 per example, real_logits [B]), the logits from
    the same forward pass so that the caller does not recompute them.
  """
  logits, vjp = jax.vjp(logits_fn, real_inputs)
  # A summed (scalar) logit would still give gradients, but a penalty of the whole batch's sum.
  chex.assert_shape(
      logits,
      (real_inputs.shape[0],),
      custom_message="r1_penalty: logits_fn must map real_inputs [B, ...] to per-example logits [B]",
  )
  (grads,) = vjp(jnp.ones_like(logits))
  sq_norm = jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=-1)
  return 0.5 * weight * sq_norm, logits


def _check_communication_logits(name, *logits):
  # The four must be the same [B]: a [B, 1] among [B] ones broadcasts to a silent [B, B] loss.
  chex.assert_equal_shape(
      [jnp.asarray(x) for x in logits],
      custom_message=(
          f"{name}: own_logits_1, other_logits_1, own_logits_2 and other_logits_2 must have the "
          "same shape [B]"
      ),
  )


def communication_discriminator_loss(
    own_logits_1: jax.Array,
    other_logits_1: jax.Array,
    own_logits_2: jax.Array,
    other_logits_2: jax.Array,
) -> jax.Array:
  """The discriminator's side of the communication matchings, Eq. (12), as a loss to minimise.

  Two generated samples share the union U = S1 u T1 = S2 u T2:
    x1 ~ p(x_T1 | x_S1) q(x_S1),  x2 ~ p(x_T2 | x_S2) q(x_S2).
  The implicit discriminator between them is f(x; S2, T2) - f(x; S1, T1) (App. D.2), and Eq. (12)
  maximises log sigma[f(x1; S2,T2) - f(x1; S1,T1)] + log sigma[f(x2; S1,T1) - f(x2; S2,T2)].

  Args:
    own_logits_1: [B] f(x1; S1, T1).
    other_logits_1: [B] f(x1; S2, T2).
    own_logits_2: [B] f(x2; S2, T2).
    other_logits_2: [B] f(x2; S1, T1).

  Returns:
    [B] softplus(own_1 - other_1) + softplus(own_2 - other_2) (minus the Eq. (12) value).
  """
  _check_communication_logits(
      "communication_discriminator_loss", own_logits_1, other_logits_1, own_logits_2, other_logits_2
  )
  return jax.nn.softplus(own_logits_1 - other_logits_1) + jax.nn.softplus(
      own_logits_2 - other_logits_2
  )


def communication_generator_loss(
    own_logits_1: jax.Array,
    other_logits_1: jax.Array,
    own_logits_2: jax.Array,
    other_logits_2: jax.Array,
    *,
    saturating: bool = False,
) -> jax.Array:
  """The generator's side of Eq. (12), as a loss to minimise (arguments as in
  `communication_discriminator_loss`).

  saturating=True: the Eq. (12) value itself, -softplus(own_1 - other_1) - softplus(own_2 -
  other_2); saturating=False: the non-saturating swap of labels, softplus(other_1 - own_1) +
  softplus(other_2 - own_2). Both are zero-sum with the discriminator only in the first form.

  Returns:
    [B] per-example losses.
  """
  _check_communication_logits(
      "communication_generator_loss", own_logits_1, other_logits_1, own_logits_2, other_logits_2
  )
  if saturating:
    return -communication_discriminator_loss(
        own_logits_1, other_logits_1, own_logits_2, other_logits_2
    )
  return jax.nn.softplus(other_logits_1 - own_logits_1) + jax.nn.softplus(
      other_logits_2 - own_logits_2
  )


def mode_seeking_loss(
    samples_a: jax.Array,
    samples_b: jax.Array,
    z_a: jax.Array,
    z_b: jax.Array,
    *,
    mask: jax.Array | None = None,
    eps: float = 1e-5,
) -> jax.Array:
  """Mode-seeking regulariser (Mao et al., 2019, Eq. (3)): 1 / (d_x / d_z + eps), where d_x is
  the mean absolute difference of two samples drawn with the same condition and noises z_a,
  z_b, and d_z the mean absolute difference of the noises. Minimising it makes the generator's
  output depend on z; conditional generators (here: every task with S non-empty) otherwise
  learn to ignore their noise (Isola et al., 2017), and a generator shared by all (S, T) then
  collapses on joint generation too.

  Unlike the other losses this returns a scalar, as optax's batch-level contrastive losses do:
  the reference implementation (Mao et al.'s MSGAN code) pools d_x and d_z over the batch
  before the reciprocal, and there are no per-example values whose mean gives that estimator.
  Per-example reciprocals are another regulariser, which explodes on the first example whose
  two draws coincide and would change the `cpu` BigLearn-GAN that was measured with this one.

  Args:
    samples_a, samples_b: [B, ...] two draws (same condition per example).
    z_a, z_b: [B, Z] the noises that produced them.
    mask: optional bool [B, L] (samples [B, L, P]): compare only these positions (e.g. L minus
      S, where the generator is free).
    eps: keeps the loss finite when the draws coincide.

  Returns:
    scalar loss (>= 0).
  """
  samples_a, samples_b, z_a, z_b = map(jnp.asarray, (samples_a, samples_b, z_a, z_b))
  chex.assert_equal_shape(
      [samples_a, samples_b],
      custom_message="mode_seeking_loss: samples_a and samples_b must have the same shape [B, ...]",
  )
  # Noises of another batch would give a d_z that does not belong to these samples.
  chex.assert_equal_shape(
      [z_a, z_b], custom_message="mode_seeking_loss: z_a and z_b must have the same shape [B, Z]"
  )
  chex.assert_equal_shape_prefix(
      [samples_a, z_a],
      1,
      custom_message="mode_seeking_loss: samples_a [B, ...] and z_a [B, Z] must have the same B",
  )
  if mask is not None:
    chex.assert_shape(
        mask,
        samples_a.shape[:-1],
        custom_message="mode_seeking_loss: mask must be [B, L] for samples [B, L, P]",
    )
  diff = jnp.abs(samples_a - samples_b)
  if mask is not None:
    m = jnp.broadcast_to(mask[..., None], diff.shape).astype(diff.dtype)
    d_x = jnp.sum(diff * m) / jnp.maximum(jnp.sum(m), 1.0)
  else:
    d_x = jnp.mean(diff)
  d_z = jnp.mean(jnp.abs(z_a - z_b))
  return 1.0 / (d_x / d_z + eps)


def reconstruction_loss(fake: jax.Array, real: jax.Array, source: jax.Array) -> jax.Array:
  """L1 reconstruction term for completions (pix2pix's, Isola et al., 2017; not in the paper):
  per example, the absolute difference between drawn and real patches outside S, summed over
  those patches (each patch's mean over its values), for the examples whose S is non-empty.
  For S empty it would pull joint generations towards the mean image, so those examples give
  0.

  Like `permutation_lm`, a per-example sum: the mean over every counted patch of a batch is
  `sum(loss) / sum(reconstruction_counts(source))`.

  Args:
    fake, real: [B, L, P] the generator's draw and the real patches.
    source: bool [B, L], the source set S of each example.

  Returns:
    [B] losses (>= 0).
  """
  if fake.shape != real.shape or source.shape != fake.shape[:2]:
    raise ValueError(
        f"fake and real must be [B, L, P] with source [B, L]; got {fake.shape}, "
        f"{real.shape} and {source.shape}."
    )
  err = jnp.abs(fake - real).mean(-1)  # [B, L]
  return jnp.sum(err * _counted(source).astype(err.dtype), axis=-1)


def _counted(source: jax.Array) -> jax.Array:
  """bool [B, L]: the patches `reconstruction_loss` counts (outside S, where S is non-empty)."""
  return ~source & jnp.any(source, axis=1, keepdims=True)


def reconstruction_counts(source: jax.Array) -> jax.Array:
  """int32 [B]: how many patches `reconstruction_loss` counts per example (the patches
  outside S where S is non-empty; 0 for joint generation)."""
  chex.assert_rank(source, 2, custom_message="reconstruction_counts: source must be bool [B, L]")
  return jnp.sum(_counted(source), axis=-1, dtype=jnp.int32)


def permutation_lm(
    logits: jax.Array,
    tokens: jax.Array,
    target_mask: jax.Array,
    *,
    vocab_mask: jax.Array | None = None,
) -> jax.Array:
  """Negative Eq. (15): -sum over targets t of log p(x_t | the positions t may see), per example.

  With logits from a two-stream model's query stream under a permutation mask of an order z
  (bigjax.permutation.permutation_mask), logits[b, t] sees exactly x_(z_<t), so summing over
  the targets T = {z_c, ..., z_L} gives -log p(x_T | x_S) with S = {z_<c} (the chain rule). All
  positions targets: the XLNet objective; the label alone, last in the order: the
  cross-entropy classifier p(y | x'), i.e. beta = 0 of Eq. (17).

  Args:
    logits: float [B, L, V], unnormalised log-probabilities of each position's token.
    tokens: int [B, L], the true tokens.
    target_mask: bool [B, L], the positions whose log-likelihood counts.
    vocab_mask: optional bool [L, V] or [B, L, V]: the ids each position may take (e.g. image
      codes at image positions, labels at the label position); the softmax is over those only.
      Every target's true token must be allowed.

  Returns:
    [B] (float32, or float64 for float64 logits): the summed negative log-likelihood over each example's targets (nats; 0 for an
    example without targets). Divide by `target_mask.sum(-1)` for a per-token mean.
  """
  logits, tokens, target_mask = map(jnp.asarray, (logits, tokens, target_mask))
  chex.assert_shape(
      tokens,
      logits.shape[:-1],
      custom_message="permutation_lm: tokens must be int [B, L] for logits [B, L, V]",
  )
  # A [L] target_mask would broadcast over the batch without a word.
  chex.assert_equal_shape(
      [tokens, target_mask],
      custom_message="permutation_lm: target_mask must be bool [B, L], the shape of tokens",
  )
  if vocab_mask is not None:
    chex.assert_is_broadcastable(
        jnp.shape(vocab_mask),
        logits.shape,
        custom_message="permutation_lm: vocab_mask must be bool [L, V] or [B, L, V]",
    )
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bfloat16 -> float32
  if vocab_mask is not None:
    logits = jnp.where(vocab_mask, logits, -jnp.inf)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  token_log_prob = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  # where, not multiply: a non-target's token may be disallowed there (log prob -inf).
  return -jnp.sum(jnp.where(target_mask, token_log_prob, 0.0), axis=-1)
