"""MapReduce on the swarm: apps, plans, map and reduce tasks, and the numpy kernels they share.

`kernels` holds the hot path (hash, partition, sort, group, combine, merge, tokenize) as whole-array numpy
operations; `runs` holds the sorted run files that carry map output to the reducers.
"""
