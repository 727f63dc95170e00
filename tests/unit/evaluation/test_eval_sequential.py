"""Time-local co-occurrence (recpipe_dev.evaluation.sequential) against hand-computed counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from recpipe_dev.evaluation.sequential import SequentialCooccurrence


def _times() -> sp.csr_matrix:
    # user 0 rates items 0, 1, 2 at t = 1, 2, 3; user 1 rates items 1 and 0 in the same second
    # (ordered by item index: 0 then 1) and item 3 later.
    rows = [0, 0, 0, 1, 1, 1]
    cols = [0, 1, 2, 1, 0, 3]
    ts = [1.0, 2.0, 3.0, 5.0, 5.0, 9.0]
    return sp.csr_matrix((ts, (rows, cols)), shape=(2, 4))


def test_counts_pairs_within_the_window_with_decay_and_never_across_users() -> None:
    model = SequentialCooccurrence(window=2, decay=0.5, damping=0.0)
    model.fit(_times())
    assert model.similarity is not None
    # sequences 0,1,2 and 0,1,3: distance-1 pairs weigh 1, distance-2 pairs 0.5
    expected = np.array(
        [
            [0.0, 2.0, 0.5, 0.5],
            [2.0, 0.0, 1.0, 1.0],
            [0.5, 1.0, 0.0, 0.0],
            [0.5, 1.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(model.similarity.toarray(), expected)
    adjacent = SequentialCooccurrence(window=1, damping=0.0)
    adjacent.fit(_times())
    assert adjacent.similarity is not None
    assert adjacent.similarity[0, 2] == 0.0 and adjacent.similarity[0, 1] == 2.0


def test_popularity_damping_and_user_scores() -> None:
    model = SequentialCooccurrence(window=2, decay=0.5, damping=0.5)
    model.fit(_times())
    # S_ij = C_ij / sqrt(n_i n_j); items 0 and 1 have 2 users, items 2 and 3 one each
    x = sp.csr_matrix(np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]))
    got = model.scores(np.array([0, 1]), x)
    s = 1.0 / np.sqrt(2.0)
    np.testing.assert_allclose(got[0], [0.0, 1.0, 0.5 * s, 0.5 * s], rtol=1e-6)
    # user 1's scores sum the rows of its two items, 1 and 2
    np.testing.assert_allclose(got[1], [1.0 + 0.5 * s, s, s, s], rtol=1e-6)


def test_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="window"):
        SequentialCooccurrence(window=0)
