"""Token vectors -> compressed on-disk index: codec training, format, writer, reader."""
