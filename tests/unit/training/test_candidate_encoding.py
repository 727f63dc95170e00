"""The vectorised candidate encoder writes what keys.decode_candidates reads back exactly
like keys.encode_candidates' output (same ids and order, scores to 5 decimals)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from recpipe.redis_keys import decode_candidates, encode_candidates
from recpipe.training.candidates import CandidateLists

IDS = ["1", "22", "item-333", 'we"ird', "ü", "x" * 30]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.tuples(st.integers(0, len(IDS) - 1), st.floats(-999.0, 999.0, allow_nan=False, width=32)),
            max_size=6,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_encoded_lists_decode_like_the_contract_encoder(rows: list[list[tuple[int, float]]]) -> None:
    width = 6
    items = np.full((len(rows), width), -1, np.int32)
    scores = np.zeros((len(rows), width), np.float32)
    for r, row in enumerate(rows):
        for j, (i, s) in enumerate(row):
            items[r, j], scores[r, j] = i, s
    lists = CandidateLists([f"u{r}" for r in range(len(rows))], items, scores, IDS)

    encoded = dict(lists.encoded(block=3))

    for r, row in enumerate(rows):
        user = f"u{r}"
        if not row:
            assert user not in encoded  # users without candidates are not written
            continue
        got = decode_candidates(encoded[user])
        want = decode_candidates(encode_candidates(lists[user]))
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1.01e-5)
