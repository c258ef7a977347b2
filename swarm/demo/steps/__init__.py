"""The Python step code of `swarm demo sales`, pushed to the cluster as an artifact.

The directory is packed as it is: on a node its modules are top-level (`sales_pipeline:extract_map`),
so they import nothing but the standard library.
"""
