"""The training core: load CIFAR-10, build the seed ConvNet, train it while streaming metrics,
evaluate it, and classify any picture a user brings. Knows nothing of Streamlit.

Importing this package is cheap: TensorFlow loads only when a model is built or loaded.
"""
