"""imgclf: image classification and transfer learning with Keras 3.

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
