"""The program model: what a function does on its paths (``flow``).

This layer knows Python, not training: a control-flow graph per function and path questions on
it. ``ampfix.model`` (the training step model) asks it; rules ask the training step model. Imports
run one way: program <- model <- rules.
"""
