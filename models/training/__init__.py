"""Training and evaluation of VISTA and the baselines.

budget: the shared rules (BudgetConfig, seeds, optimizer, negatives, length buckets); loop: the one
early-stopping loop; losses: VISTA's loss; trainer: VISTA's TrainConfig, train_step and train_vista;
data / evaluate / metrics: data loading, leave-one-out split, full-ranking evaluation; harness: experiments.
"""
