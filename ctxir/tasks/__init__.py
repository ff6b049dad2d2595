"""LightningModules: geometry pre-training, frozen tuning and contextualised tuning."""
