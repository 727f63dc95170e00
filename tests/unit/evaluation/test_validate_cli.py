"""`recpipe validate --stage` lists the stages `run_validation` accepts. The command module
keeps its own copy because it imports the training code only when it runs (0.6 s), so this
test is what keeps the two in step."""

from __future__ import annotations

import argparse

from recpipe_dev.cli import build_parser
from recpipe_dev.evaluation.validation import STAGES


def test_stage_choices_are_the_validation_stages() -> None:
    parser = build_parser(["validate"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    stage = next(a for a in sub.choices["validate"]._actions if a.dest == "stage")
    assert stage.choices is not None
    assert tuple(stage.choices) == STAGES
    assert stage.default == STAGES[0]
