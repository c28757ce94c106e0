"""The control plane: deployments accounts create at run time (registry), the pools their
instances run on, and the reconciler that makes what runs match what the database wants."""
