"""The training step model's facts beyond the events of one function: what precision and device a
step uses (``precision``). Asks the program layer (ampfix.program); rules ask it."""
