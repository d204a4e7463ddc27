"""Training and evaluation of the VISTA model (data loading, leave-one-out split, trainer, metrics)."""
