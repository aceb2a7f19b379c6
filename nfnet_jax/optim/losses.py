"""Classification losses and top-k accuracy.

Label smoothing follows the official NFNet code (``experiment.py``):
targets (one-hot, or MixUp/CutMix mixtures) become
``targets * (1 - ls) + ls / num_classes``; the recipe uses ls = 0.1.
"""
import jax
import jax.numpy as jnp


def _as_soft_targets(targets, num_classes):
  targets = jnp.asarray(targets)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    return jax.nn.one_hot(targets, num_classes, dtype=jnp.float32)
  return targets.astype(jnp.float32)


def softmax_cross_entropy(logits, targets, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy with optional label smoothing.

  Args:
    logits: [N, K] (computed in float32 whatever their dtype).
    targets: int labels [N], or soft targets [N, K] (rows summing to 1, e.g.
      MixUp/CutMix mixtures or one-hot vectors).
    label_smoothing: ls in [0, 1): targets become ``targets * (1 - ls) +
      ls / K`` before the loss (the official form; 0.1 in the recipe).

  Returns:
    The loss of every example, shape [N], float32.

  Raises:
    ValueError: if the shapes do not fit together or ls is out of range.
  """
  logits = jnp.asarray(logits)
  num_classes = logits.shape[-1]
  targets = jnp.asarray(targets)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    if targets.shape != logits.shape[:-1]:
      raise ValueError(f'int labels of shape {targets.shape} do not match '
                       f'logits of shape {logits.shape}; expected '
                       f'{logits.shape[:-1]}.')
  elif targets.shape != logits.shape:
    raise ValueError(f'soft targets of shape {targets.shape} do not match '
                     f'logits of shape {logits.shape}.')
  # Only Python numbers are checked; a traced value is the caller's business.
  if isinstance(label_smoothing, (int, float)) and not (
      0.0 <= label_smoothing < 1.0):
    raise ValueError(
        f'label_smoothing must be in [0, 1), got {label_smoothing!r}.')
  soft = _as_soft_targets(targets, num_classes)
  if not isinstance(label_smoothing, (int, float)) or label_smoothing:
    soft = soft * (1.0 - label_smoothing) + label_smoothing / num_classes
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(soft * log_probs, axis=-1)


def topk_correct(logits, labels, k: int = 1):
  """1.0 where the label is among the k largest logits, else 0.0.

  Args:
    logits: [N, K].
    labels: int labels [N], or soft targets [N, K] (their argmax is used,
      i.e. the dominant label of a MixUp/CutMix mixture).
    k: how many top predictions count as correct (1 <= k).

  Returns:
    Float32 array [N]. Ties between logits are broken towards the lower class
    index (``jax.lax.top_k``).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if k < 1:
    raise ValueError(f'k must be >= 1, got {k!r}.')
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, axis=-1)
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits.astype(jnp.float32), k)
  return jnp.any(top == labels[..., None], axis=-1).astype(jnp.float32)
