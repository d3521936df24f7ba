"""Built-in pruning methods, registered through the ``tamt.methods`` entry points."""
