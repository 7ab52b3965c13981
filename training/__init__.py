"""Training: datasets, models, the train loop, metrics and plots, configs and Slurm scripts."""
