"""The embedded runtime: one machine, no cluster, a local tritonserver and on-disk stores."""
