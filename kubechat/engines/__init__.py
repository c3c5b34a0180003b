"""Generation and embedding engines behind the CPU python-backend models of model-repo/.

They run inside Triton's python backend stub; keeping them here (typed, unit-testable) leaves
each model.py a thin adapter between Triton tensors and these classes.
"""
