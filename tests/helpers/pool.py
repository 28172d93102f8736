"""Module-level task functions for the run-pool tests (worker processes import them)."""


def square(world, x):
    assert world is not None  # every worker prepared the world
    return x * x


def fail_on(world, x):
    raise ValueError(f"bad input {x}")
