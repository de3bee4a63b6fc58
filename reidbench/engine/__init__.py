"""Training engine: optimisers and schedules, checkpoints, distributed setup, the trainer."""
