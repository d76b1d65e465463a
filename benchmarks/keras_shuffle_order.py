"""Shows that Keras 3 on TensorFlow, under a global seed, shuffles arrays alike every epoch.

``model.fit(x, y, shuffle=True)`` feeds arrays through Keras's ArrayDataAdapter. After
``keras.utils.set_random_seed``, each epoch's new iterator draws the same permutation:

    python benchmarks/keras_shuffle_order.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter  # noqa: E402

keras.utils.set_random_seed(42)
samples = np.arange(1000, dtype="float32").reshape(-1, 1)
dataset = ArrayDataAdapter(samples, batch_size=64, shuffle=True).get_tf_dataset()
for epoch in range(3):
    first_batch = next(iter(dataset))
    print(f"epoch {epoch + 1}: first samples {first_batch[:6, 0].numpy().astype(int).tolist()}")
