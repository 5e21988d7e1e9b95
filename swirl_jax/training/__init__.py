"""Train state, train step, optimizer, checkpoints, metrics and the loop."""

from swirl_jax.training.optimizer import learning_rate_schedule, make_optimizer
from swirl_jax.training.train_state import TrainState
from swirl_jax.training.train_step import make_train_step
