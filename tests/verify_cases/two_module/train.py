"""A two-file project: the loop lives in trainlib.py, which ampfix rewrites too."""
import trainlib

trainlib.train(steps=6)
