"""Redis key layout: the one place that names keys and encodes values.

Every key starts with `rp:{env}:` so several environments can share a cache. Candidate lists
are published under a version prefix and made visible by switching one pointer key, so readers
never see a half-published version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

SESSION_MAX_ITEMS = 50
#: Candidate scores are stored with this many decimals (training's example builder rounds alike).
SCORE_DECIMALS = 5
SESSION_TTL_S = 30 * 60
TRENDING_BUCKET_S = 300
TRENDING_BUCKETS = 12  # an hour of 5-minute buckets
TRENDING_TTL_S = TRENDING_BUCKET_S * (TRENDING_BUCKETS + 1)
#: Buckets lose half their weight every this many buckets when combined into `top`.
TRENDING_HALF_LIFE_BUCKETS = 4.0
#: Candidate versions a failed publish left incomplete are dropped after this.
OLD_VERSION_TTL_S = 6 * 3600
#: Superseded (complete) candidate versions stay restorable this long by default
#: (PUBLISHED_RETENTION_DAYS): `recpipe rollback` needs them.
PUBLISHED_RETENTION_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class KeyLayout:
    env: str = "dev"

    @property
    def prefix(self) -> str:
        return f"rp:{self.env}:"

    # Candidate cache -----------------------------------------------------------------------
    def candidate_pointer(self) -> str:
        return f"{self.prefix}cand:current"

    def candidates(self, version: str, user_id: str) -> str:
        return f"{self.prefix}cand:{version}:u:{user_id}"

    def candidate_version_meta(self, version: str) -> str:
        """Written last in a publish: its presence means the version is complete."""
        return f"{self.prefix}cand:{version}:meta"

    def candidate_version_pattern(self, version: str) -> str:
        return f"{self.prefix}cand:{version}:*"

    def candidate_restore_lock(self) -> str:
        """Held by the one scoring instance restoring an emptied cache from its bundle."""
        return f"{self.prefix}cand-restore:lock"

    def candidate_versions(self) -> str:
        """Set of versions with lists written, so a publish that never completed is expired."""
        return f"{self.prefix}cand:versions"

    # Live session and trending ---------------------------------------------------------------
    def session(self, user_id: str) -> str:
        return f"{self.prefix}sess:{user_id}"

    def trending_bucket(self, bucket: int) -> str:
        return f"{self.prefix}trend:{bucket}"

    def idempotency(self, scope: str, key: str) -> str:
        return f"{self.prefix}idem:{scope}:{key}"


def trending_bucket_of(ts: float) -> int:
    return int(ts // TRENDING_BUCKET_S)


def encode_candidates(pairs: Sequence[tuple[str, float]]) -> bytes:
    """[(item_id, score), ...] best first -> compact JSON."""
    return json.dumps(
        [[i, round(float(s), SCORE_DECIMALS)] for i, s in pairs], separators=(",", ":")
    ).encode()


def decode_candidates(raw: bytes | str | None) -> list[tuple[str, float]]:
    if not raw:
        return []
    return [(str(i), float(s)) for i, s in json.loads(raw)]


def encode_session_entry(item_id: str, event_type: str, ts: float) -> str:
    return f"{item_id}|{event_type}|{ts:.3f}"


def decode_session_entry(raw: bytes | str) -> tuple[str, str, float]:
    s = raw.decode() if isinstance(raw, bytes) else raw
    item_id, event_type, ts = s.rsplit("|", 2)
    return item_id, event_type, float(ts)
