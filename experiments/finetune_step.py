r"""The fine-tuning experiment's training step and state (App. E.2), and the switches that take
big-learn's mechanisms apart (issue 23, item 5).

Eq. (17) mixes two things into one AdamW step: Eq. (15) as extra training tasks (a regulariser),
and Eq. (15)'s gradient in Adam's statistics, which in the pretrained body is about 15x FT's and
so sets the body's step size. Each switch below (configs/finetune.py) removes or isolates one:

  plm.label_weight    None: Eq. (15) as written, one mean over text and label targets. w >= 0:
                      the text and the label targets averaged separately, text + w * label
                      (bigjax.finetuning.permutation_loss).
  plm.label_only      the label the only target of Eq. (15), predicted from a uniformly random
                      subset of the text: big-learn's label side without the text tasks.
  plm.separate_adam   Eq. (15)'s gradient gets its own Adam statistics: the step's direction is
                      Adam(Eq. 16) + beta * Adam(Eq. 15), so Eq. (15) no longer rescales FT's
                      step (both clipped to grad_clip; weight decay once, in FT's).
  body_lr_scale       the learning rate of the pretrained body (the transformer, embeddings
                      included) times this; the new heads and the label embedding keep the
                      full rate. FT with a lower body rate asks whether big-learn's effect is
                      only a smaller body step.

With every switch at its default the step is the one before the switches existed, and a beta = 0
run is FT bit for bit whatever the plm.* switches say.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bigjax import finetuning
from bigjax.training import optimizers
from bigjax.training import sharding
from experiments import finetune_setup as setup
from experiments.finetune_setup import FTState

__all__ = ["ADDED_DEFAULTS", "abstract_state", "compiled_step", "init_state", "step_options"]

# Config fields added after runs and sweeps were written, with the value that reproduces them.
ADDED_DEFAULTS = {
    "body_lr_scale": 1.0,
    "plm.label_weight": None,
    "plm.label_only": False,
    "plm.separate_adam": False,
}


def _separate_adam(config) -> bool:
  return bool(config.plm.get("separate_adam", False)) and bool(config.beta)


def step_options(config) -> dict[str, Any]:
  """The static settings of a run's step (`compiled_step`'s keyword arguments but the mesh)."""
  pretrain = config.mode == "pretrain"
  label_weight = config.plm.get("label_weight")
  return dict(
      pretrain=pretrain,
      plm=bool(config.beta) or pretrain,
      target_fraction=float(config.plm.target_fraction),
      label_last_prob=float(config.plm.label_last_prob),
      plm_batch=int(config.plm.batch_size),
      weight_decay=float(config.weight_decay),
      grad_clip=float(config.grad_clip),
      label_weight=None if label_weight is None else float(label_weight),
      label_only=bool(config.plm.get("label_only", False)),
      separate_adam=_separate_adam(config),
      body_lr_scale=float(config.get("body_lr_scale", 1.0)),
  )


def _optimizer(weight_decay: float, grad_clip: float) -> optax.GradientTransformation:
  return optimizers.adamw_direction(weight_decay=weight_decay, grad_clip=grad_clip)


def init_state(config, params: dict, rng) -> FTState:
  """A fresh state; with plm.separate_adam (and beta > 0) the optimiser state is the pair
  (Eq. (16)'s, Eq. (15)'s)."""
  opt_state = _optimizer(float(config.weight_decay), float(config.grad_clip)).init(params)
  if _separate_adam(config):
    opt_state = (opt_state, _optimizer(0.0, float(config.grad_clip)).init(params))
  return FTState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_state,
      rng=jax.random.key_data(rng),
  )


def abstract_state(config, hf_config: dict) -> FTState:
  """The state's shapes and dtypes, to restore a checkpoint into without reading weights."""
  models = setup.build_models(hf_config, setup.num_labels_of(config))

  def fresh(key):
    ids = jnp.zeros((2, 4), jnp.int32)
    params = dict(xlnet=models.lm.init(key, ids))
    if config.mode != "pretrain":
      params["label_embedding"] = jnp.zeros((setup.num_labels_of(config), models.lm.d_model))
    return init_state(config, params, key)

  return jax.eval_shape(fresh, jax.random.key(0))


def _body_scaled(direction, scale: float):
  """`direction` with the pretrained body's leaves (params["xlnet"]["params"]["transformer"])
  times `scale`."""

  def leaf(path, u):
    keys = [getattr(k, "key", None) for k in path[:3]]
    return u * scale if keys == ["xlnet", "params", "transformer"] else u

  return jax.tree_util.tree_map_with_path(leaf, direction)


@functools.lru_cache(maxsize=8)
def compiled_step(
    hf_json: str,
    num_labels: int,
    *,
    pretrain: bool,
    plm: bool,
    target_fraction: float,
    label_last_prob: float,
    plm_batch: int,
    weight_decay: float,
    grad_clip: float,
    mesh: jax.sharding.Mesh,
    label_weight: float | None = None,
    label_only: bool = False,
    separate_adam: bool = False,
    body_lr_scale: float = 1.0,
):
  """The jitted train step (state, input_ids, token_type_ids, attention_mask, labels, lr, beta)
  -> (state, metrics), cached per model and static setting, so the runs of a sweep share it.
  lr and beta are traced scalars; `plm` (beta > 0) decides whether Eq. (15) is computed; the
  switches are the module docstring's (`step_options` reads them from a config)."""
  models = setup.build_models(json.loads(hf_json), num_labels)
  opt = _optimizer(weight_decay, grad_clip)
  plm_opt = _optimizer(0.0, grad_clip)
  plm_options = dict(
      target_fraction=target_fraction,
      label_last_prob=label_last_prob,
      label_weight=label_weight,
      label_only=label_only,
      plm_examples=plm_batch,
  )

  def train_step(state: FTState, input_ids, token_type_ids, attention_mask, labels, lr, beta):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    batch = dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        labels=labels,
    )

    def loss_fn(params):
      if pretrain:
        unlabelled = {k: v for k, v in batch.items() if k != "labels"}
        return finetuning.permutation_loss(
            models.lm, params["xlnet"], unlabelled, key, target_fraction=target_fraction
        )
      # beta is traced (one compiled step for every beta > 0); 0.0 skips Eq. (15).
      return finetuning.biglearn_loss(
          models.classifier,
          models.lm,
          params["xlnet"],
          batch,
          key,
          beta=beta if plm else 0.0,
          label_embedding=params["label_embedding"],
          **plm_options,
      )

    def term(index):
      """Eq. (16) (0) or Eq. (15) (1) alone, with the aux of both."""

      def f(params):
        out = finetuning.biglearn_terms(
            models.classifier,
            models.lm,
            params["xlnet"],
            batch,
            key,
            label_embedding=params["label_embedding"],
            **plm_options,
        )
        return out[index], out[2]

      return jax.value_and_grad(f, has_aux=True)(state.params)

    if separate_adam:
      (_, _), ft_grads = term(0)
      (plm_loss, aux), plm_grads = term(1)
      loss = aux["ft_loss"] + beta * plm_loss
      grads = jax.tree.map(lambda a, b: a + beta * b, ft_grads, plm_grads)  # for grad_norm
      ft_dir, ft_state = opt.update(ft_grads, state.opt_state[0], state.params)
      plm_dir, plm_state = plm_opt.update(plm_grads, state.opt_state[1], state.params)
      direction = jax.tree.map(lambda a, b: a + beta * b, ft_dir, plm_dir)
      opt_state = (ft_state, plm_state)
    else:
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      direction, opt_state = opt.update(grads, state.opt_state, state.params)
    if body_lr_scale != 1.0:
      direction = _body_scaled(direction, body_lr_scale)
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, direction)
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=lr, **aux)
    return FTState(state.step + 1, params, opt_state, state.rng), metrics

  replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
      train_step,
      in_shardings=(replicated,) + (split,) * 4 + (replicated,) * 2,
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )
