"""Reward functions used by the tests (loaded by the trainer as 'tests.rewards_for_tests:NAME')."""


def digit_fraction(completions, **kwargs):
    """Fraction of characters that are digits: learnable from scratch by a random tiny model."""
    return [sum(c.isdigit() for c in text) / max(1, len(text)) for text in completions]


def brevity(completions, **kwargs):
    """Shorter texts (in characters) score higher: a preference a random tiny model can learn in a few steps."""
    return [1.0 - min(len(text), 40) / 40 for text in completions]


def second_turn_brevity(completions, turn=None, **kwargs):
    """:func:`brevity` on the second turn of an episode (column ``turn`` from tests.envs_for_tests), None elsewhere."""
    turn = turn if turn is not None else [None] * len(completions)
    return [1.0 - min(len(text), 40) / 40 if t == 2 else None for text, t in zip(completions, turn)]
