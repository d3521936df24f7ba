"""Built-in downstream tasks (GLUE and SQuAD), registered through the ``tamt.tasks`` entry points.

The protocol every task follows is documented in :mod:`tamt_cli.tasks.base`. Nothing here imports
torch, transformers or datasets at module level: ``tamt plugins`` imports every task module to
report its status and must stay fast.
"""
