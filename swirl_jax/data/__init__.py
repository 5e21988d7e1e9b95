"""Host-side data: SFT tokenisation with loss masks and the grain pipeline.

`sft` turns (prompt, target) records and multi-turn demonstrations into token
sequences with loss masks; `pipeline` shards, shuffles, tokenises, pads or
packs and batches them for the trainer. Neither imports TensorFlow or seqio.
"""

from swirl_jax.data.pipeline import BATCH_DTYPES
from swirl_jax.data.pipeline import batch_spec
from swirl_jax.data.pipeline import make_iterator
from swirl_jax.data.pipeline import make_sft_dataset
from swirl_jax.data.pipeline import measure_batches_per_second
from swirl_jax.data.pipeline import shard_bounds
from swirl_jax.data.pipeline import TruncationStats
from swirl_jax.data.sft import to_next_token_features
from swirl_jax.data.sft import tokenize_example
from swirl_jax.data.sft import tokenize_multiturn
from swirl_jax.data.sft import tokenize_sft_example
