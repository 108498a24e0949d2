"""The MNIST task: data and augmentation, nets, the LightningModule, callbacks, the run and its seed tables."""
