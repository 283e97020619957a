"""An example of a model and a dataset of your own, swept by vae_sweep without editing it (README: "Your own model,
loss and data"): `nets.ResidualVAE` meets `vae_sweep.contracts.Model`, `blobs.blobs` returns the `ImageData` of
`vae_sweep.contracts.Dataset`, with factors of variation for the disentanglement metrics."""
