"""What an MNIST image is, for every part that makes, reads or draws one: 28×28 grey levels, a white digit on black,
normalised with the training set's mean and standard deviation."""

IMAGE_SIZE = 28  # every net takes 1×IMAGE_SIZE×IMAGE_SIZE
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60,000 training images' grey levels in [0, 1]
