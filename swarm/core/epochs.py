"""The epoch rule every reader of claims follows, members and submitters alike.

Apart from `election.py` so that a submitter, which only follows the epoch, does not load the election
and the effects it returns: a CLI command is a fresh interpreter each time.
"""

from __future__ import annotations

__all__ = ["MAX_EPOCH_STEP", "claim_in_reach"]

#: How far past the highest known epoch a claim may reach. A legitimate claim is one past what its
#: claimant saw; a node far behind catches up from the coordinator's announcement, which is not bounded
#: (an announcement comes only from the member it names). Without the bound, one claim of a huge epoch
#: would leave no epoch above it to claim.
MAX_EPOCH_STEP = 64


def claim_in_reach(epoch: int, known: int) -> bool:
    """Whether a claim for `epoch` may be taken by someone who knows epoch `known`."""
    return epoch <= known + MAX_EPOCH_STEP
