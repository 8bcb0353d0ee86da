"""Training: Feast training sets, model families, MLflow tracking and champion/challenger promotion."""
