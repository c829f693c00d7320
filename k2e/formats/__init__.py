"""Dataset and event file formats read without TensorFlow: npz, CSV, TFRecord (and the
tf.Example messages in it), TensorBoard event files."""
