"""SWiRL (step-wise RL on synthetic, filtered tool-use trajectories).

Stage 1's judging, filtering and sub-trajectory split live in `filters`.
"""

from swirl_jax.swirl.filters import FILTERS
from swirl_jax.swirl.filters import RECORD_FIELDS
from swirl_jax.swirl.filters import all_sub_trajectories
from swirl_jax.swirl.filters import filter_statistics
from swirl_jax.swirl.filters import filter_trajectories
from swirl_jax.swirl.filters import judge_request_for_record
from swirl_jax.swirl.filters import judge_trajectories
from swirl_jax.swirl.filters import sub_trajectories
from swirl_jax.swirl.filters import write_statistics
