"""vae_sweep: train VAEs and beta-VAEs from Hydra configs and sweep them to map rate against distortion.

Units everywhere (see README, "Units"): distortion and rate are in nats per example, summed over pixels
and latent dimensions respectively, averaged over examples.
"""

__version__ = "0.1.0"
