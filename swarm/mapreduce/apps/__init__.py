"""Built-in MapReduce apps; each uses the vectorized API (see `swarm.mapreduce.app`)."""
