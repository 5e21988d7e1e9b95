"""Host-side helpers of swirl_jax.sharding."""

import numpy as np

from swirl_jax import sharding


def test_global_group_ids_do_not_collide_across_processes():
  local = np.array([0, 0, 1, 1, 2, 2], np.int32)
  ids = [sharding.global_group_ids(local, process_index=p) for p in range(3)]
  np.testing.assert_array_equal(ids[0], local)
  np.testing.assert_array_equal(ids[2], local + 12)
  merged = np.concatenate(ids)
  # Same groups within a host, and no group shared by two hosts.
  assert len(set(merged.tolist())) == 9
  assert sharding.global_group_ids(local).dtype == np.int32


def test_prefix_key_matches_the_objectives():
  from swirl_jax.objectives import shared_prefix
  assert sharding._PREFIX_KEY == shared_prefix.PREFIX_KEY  # pylint: disable=protected-access


_PUT_BATCH = """
import numpy as np
from swirl_jax import sharding
mesh = sharding.make_mesh(data=8)
def batch(groups, g=4):
  return {"inputs": np.zeros((groups * g, 6), np.int32),
          "prefix_inputs": np.zeros((groups, 2), np.int32)}
kept = sharding.put_batch(batch(8), mesh)
dropped = sharding.put_batch(batch(2), mesh)
print(sorted(kept), kept["prefix_inputs"].shape, sorted(dropped))
"""


def test_put_batch_drops_a_prefix_that_cannot_be_sharded():
  """8 groups over 8 batch shards keep 'prefix_inputs'; 2 groups cannot be
  sharded, so the batch falls back to the plain forward (same results)."""
  import os
  import subprocess
  import sys
  env = dict(os.environ,
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PUT_BATCH], env=env,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == (
      "['inputs', 'prefix_inputs'] (8, 2) ['inputs']"), out.stdout
  assert "Dropping 'prefix_inputs'" in out.stderr
