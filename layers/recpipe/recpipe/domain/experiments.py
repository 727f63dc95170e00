"""Online experiments: a traffic split between model bundles, and who sees which variant.

An experiment is a small JSON document stored beside the model pointer (an SSM parameter in
AWS, a file in a local directory of bundles):

    {"name": "ranker-2026-12", "salt": "a1b2",
     "variants": [{"name": "control", "bundle": "v1", "weight": 95},
                  {"name": "canary",  "bundle": "v2", "weight": 5,
                   "candidates": "v2", "rules": {"diversity": 0.3}}]}

Assignment is deterministic and sticky: blake2b(salt + ":" + user_id) mapped to [0, 1) and
placed on the cumulative weights, so every process (every Lambda container, the report, a test)
puts a user in the same variant without shared state, and changing the salt reshuffles
everybody. A canary is an experiment with 95/5 weights.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Bundle and candidate versions are path segments and Redis key segments.
VERSION_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
MAX_VARIANTS = 8
_SCALE = float(1 << 64)


class ExperimentError(ValueError):
    """An experiment definition that can never be served (reported, never half-applied)."""


class VariantRules(BaseModel):
    """Rule settings a variant may override (the request's own value wins when it sets one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    diversity: float | None = Field(None, ge=0.0, le=1.0)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    #: Model bundle version served to this variant.
    bundle: Annotated[str, Field(pattern=VERSION_PATTERN)]
    weight: float = Field(gt=0, le=1_000_000)
    #: Candidate-list version; default: the one published with `bundle` (same version).
    candidates: Annotated[str, Field(pattern=VERSION_PATTERN)] | None = None
    rules: VariantRules = VariantRules(diversity=None)

    @property
    def candidate_version(self) -> str:
        return self.candidates or self.bundle


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    salt: Annotated[str, Field(min_length=1, max_length=64)]
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS)
    started_at: float | None = None

    @model_validator(mode="after")
    def _distinct_names(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct, got {names}")
        return self

    @property
    def bundles(self) -> list[str]:
        return list(dict.fromkeys(v.bundle for v in self.variants))

    def split(self) -> dict[str, float]:
        """Share of users per variant (weights normalised)."""
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def parse_experiment(raw: str | bytes | dict[str, Any]) -> Experiment:
    """A stored or submitted definition, or ExperimentError with a precise reason."""
    try:
        body = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return Experiment.model_validate(body)
    except (ValueError, TypeError, ValidationError) as exc:
        raise ExperimentError(f"invalid experiment: {exc}") from None


def bucket(salt: str, user_id: str) -> float:
    """The user's position in [0, 1) for this salt; the same in every process."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class Assigner:
    """Maps users to variants of one experiment (built once per definition, cheap per call)."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        total = sum(v.weight for v in experiment.variants)
        edges: list[float] = []
        acc = 0.0
        for v in experiment.variants[:-1]:
            acc += v.weight / total
            edges.append(acc)
        self._edges = edges

    def assign(self, user_id: str) -> Variant:
        pos = bucket(self.experiment.salt, user_id)
        return self.experiment.variants[bisect_right(self._edges, pos)]
