"""Fine-tuning pretrained encoders for value detection: model, losses, batching, training."""
