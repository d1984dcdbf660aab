"""The program model: what Python code does, knowing nothing of training.

- ``flow``: a control-flow graph per function and branch-correlated path questions on it;
- ``values``: which assignments may give a name or a field its value (fields by class);
- ``calls``: which function a call inside the module runs, and how its parameters bind;
- ``module``: what these need of a module (a protocol ``ampfix.context`` satisfies).

``ampfix.training`` (the training step model) asks this layer; rules ask the training step
model. Imports run one way: program <- training <- context <- rules (tests/test_layers.py).
"""
