"""Serving side of experiments: a variant's rule settings applied to one request.

Which bundle a user gets is decided by ModelProvider.select (recpipe.serving.model_provider);
the assignment itself is recpipe.domain.experiments.
"""

from __future__ import annotations

from recpipe.domain.experiments import VariantRules
from recpipe.serving.request import RecommendationRequest


def with_variant_rules(req: RecommendationRequest, rules: VariantRules | None) -> RecommendationRequest:
    """The request with the variant's rule settings; a value the client set itself wins."""
    if rules is None or rules.diversity is None or "diversity" in req.model_fields_set:
        return req
    return req.model_copy(update={"diversity": rules.diversity})
