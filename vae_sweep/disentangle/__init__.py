"""The disentanglement wing: how well a model's latents separate a dataset's factors of variation.

`scores` computes the β-VAE, FactorVAE, MIG, DCI and SAP scores from codes and factors (disentanglement_lib's
definitions), `sampling` draws the factor vectors and images they need, `traversals` draws traversals labelled by
factor, and `report` scores one trained model for its metrics.json.

It imports the core (data, models, evaluation, the registry). The core asks it for scores through one function,
`report.disentanglement_metrics`, imported by the job only when the dataset has factors.
"""
