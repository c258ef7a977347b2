"""A node's data dir: its identity and its highest epoch, written durably before they are used.

Several nodes may run on one machine with no flags, so the default data dir is the first free slot
`~/.swarm/node-<n>`, held by an exclusive lock for the node's lifetime; a restarted node usually finds
its old slot, and with it its old id and epoch.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from typing import IO

import orjson

from swarm.durable import fsync_directory
from swarm.errors import ConfigError
from swarm.trust.authority import swarm_home

__all__ = ["NodeStorage"]


class NodeStorage:
    """The locked data dir of one running node."""

    def __init__(self, data_dir: Path, lock: IO[bytes]) -> None:
        self.data_dir = data_dir
        self._lock = lock
        self._state_path = data_dir / "node.json"
        state = self._read()
        node_id, epoch = state.get("node_id"), state.get("epoch", 0)
        self.node_id: str = node_id if isinstance(node_id, str) and node_id else f"n-{secrets.token_hex(4)}"
        self.epoch: int = epoch if isinstance(epoch, int) else 0
        port = state.get("data_port", 0)
        #: The data server's port in this node's last life: peers may still hold URLs of its map outputs.
        self.data_port: int = port if isinstance(port, int) else 0
        self._write()

    @classmethod
    def open(cls, data_dir: Path | None) -> NodeStorage:
        """Lock `data_dir`, or the first free default slot when it is None."""
        if data_dir is not None:
            lock = cls._try_lock(data_dir)
            if lock is None:
                raise ConfigError(f"data dir {data_dir} is in use by another running node")
            return cls(data_dir, lock)
        root = swarm_home()
        for n in range(1024):
            candidate = root / f"node-{n}"
            lock = cls._try_lock(candidate)
            if lock is not None:
                return cls(candidate, lock)
        raise ConfigError(f"no free data dir under {root}")

    @staticmethod
    def _try_lock(path: Path) -> IO[bytes] | None:
        path.mkdir(parents=True, exist_ok=True)
        handle = (path / "lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def persist_epoch(self, epoch: int) -> None:
        """Durably record the highest epoch seen (fsync'd before returning); `epoch` is what is on disk,
        so after an `OSError` it stays as it was and the next call writes again."""
        if epoch > self.epoch:
            stored, self.epoch = self.epoch, epoch
            try:
                self._write()
            except OSError:
                self.epoch = stored
                raise

    def adopt_node_id(self, node_id: str) -> None:
        """Take the id a join token names; only a data dir that never acted (epoch 0) may change its id."""
        if node_id == self.node_id:
            return
        if self.epoch != 0:
            raise ConfigError(f"data dir {self.data_dir} already belongs to node {self.node_id}")
        self.node_id = node_id
        self._write()

    def remember_data_port(self, port: int) -> None:
        """Record the data server's port, to listen there again after a restart."""
        if port != self.data_port:
            self.data_port = port
            self._write()

    def close(self) -> None:
        """Release the data dir."""
        self._lock.close()

    def _read(self) -> dict[str, object]:
        try:
            data = orjson.loads(self._state_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        try:
            with tmp.open("wb") as f:
                state = {"node_id": self.node_id, "epoch": self.epoch, "data_port": self.data_port}
                f.write(orjson.dumps(state))
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            # A half-written copy only takes space a full disk lacks; node.json itself is intact.
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self._state_path)
        fsync_directory(self.data_dir)
