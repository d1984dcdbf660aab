"""`ampfix verify`: run the original and the rewritten training loop and prove the rewrite.

- ``harness`` runs inside each child process (instrumentation, trace);
- ``runner`` rewrites the script, starts the three runs (original, AMP, fp32 reference);
- ``checks`` turns the traces into a verdict; ``report`` prints it.

User code runs only in subprocesses, each in its own temporary working directory, with a
timeout. torch is needed (``pip install ampfix[verify]``); checking code never is.
"""
