"""Conv VAE with a unit-variance Gaussian likelihood on Fashion-MNIST padded to 32x32.

The TFP notebook's model. Encoder Conv(4,3x3,s2)-ReLU-Conv(16,3x3,s2)-ReLU-Dense(2x16);
decoder Dense(64)-ReLU-reshape 8x8x1-ConvT(16,3x3,s2)-ReLU-ConvT(8,3x3,s2)-ReLU-Conv(1,4x4);
latent 16, diagonal Gaussian posterior, N(0, I) prior, p(x|z) = N(decoder(z), 1) per pixel;
Adam 1e-3, batch 64, 3,000 steps (3.2 epochs).

Run:
  nice -n 5 python -m vae_jax.train --config configs/fashion_conv_gaussian.py \
      --workdir runs/configs/fashion_conv_gaussian --config.input.data_dir=/path/to/tfds

Differences from the source notebook:
- The notebook passed the encoder's raw outputs in as the posterior's scales, which can be
  negative or zero. Here the scale is softplus(raw) > 0 (`model.scale_transform`).
- Padding 'same' everywhere: 32 -> 16 -> 8 in the encoder, 8 -> 16 -> 32 in the decoder, and
  the 4x4 output conv keeps 32x32. Not 'valid': a 'valid' 4x4 output conv after the 'same'
  conv-transposes gives 29x29, which is not the data's shape (caught at model creation). Keras's
  all-'valid' variant also reaches 32 (8 -> 17 -> 35, then the 4x4 conv crops to 32), but its
  maps overhang the image by 3 pixels that the last conv throws away; 'same' keeps each
  stride-2 layer an exact 2x upsampling, so the 8x8 grid maps onto 4x4 blocks of pixels.
- Performance: loop 'unroll', 5 steps per call. Measured on XLA:CPU (experiments/configs/
  README.md): 'scan' ran 3.5-3.6 steps/s, 'unroll' 8-12 steps/s (conv gradients inside
  lax.scan are slow there).

A unit-variance Gaussian on [0, 1] pixels is a weak likelihood: -log p(x|z) changes by at most
~0.5 nats per pixel between a perfect and a useless reconstruction, so the KL term wins easily;
expect blurry reconstructions and a small KL (that is the model, not a bug).

Measured (the command above, seed 0, a shared 2-core CPU at load average ~15):
  3,000 steps; test split (10,000 images): ELBO -960.47 nats (recon 955.52, KL 4.95),
  IWAE k=10 -960.09, per-pixel MSE of the reconstruction 0.0239, 10 of 16 active units;
  10.5 train steps/s, wall time 740 s (incl. ~40 s reading the data and the final eval).
  The constant part of recon is 1024 * log(2 pi) / 2 = 940.99 nats. Pictures (images/):
  blurry but recognisable reconstructions (shirt, shoe, trousers, bag silhouettes); samples
  are grey garment-shaped blobs.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.num_train_steps = 3_000
    c.log_every_steps = 100
    c.eval_every_steps = 3_000
    c.checkpoint_every_steps = 1_000
    c.steps_per_call = 5
    c.loop = 'unroll'

    c.input.dataset = 'fashion_mnist'
    c.input.pad_to_32 = True
    c.input.batch_size = 64
    c.input.eval_batch_size = 500

    c.model.latent_dim = 16
    c.model.encoder = 'conv(4,3x3,s2)-relu-conv(16,3x3,s2)-relu-flatten'
    c.model.decoder = (
        'dense(64)-relu-reshape(8,8,1)-convt(16,3x3,s2)-relu-convt(8,3x3,s2)-relu-conv(out,4x4)'
    )
    c.model.posterior = 'diagonal'
    c.model.scale_transform = 'softplus'
    c.model.likelihood = 'gaussian'
    c.model.gaussian_sigma = 'fixed'
    c.model.sigma = 1.0

    c.optim.name = 'adam'
    c.optim.learning_rate = 1e-3
    return c
