"""The pure protocol core: state machines that take events and the time and return effects.

Nothing here imports asyncio, time, random, socket, aiomqtt or zeroconf; `tests/unit/test_architecture.py`
enforces it. The same code runs in a real node (`swarm.runtime`) and in the simulator (`swarm.sim`).
"""
