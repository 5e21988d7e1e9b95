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
