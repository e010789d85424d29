"""Neural-network modules only (no file or network I/O); weights come from :mod:`gpuface.models.weights`."""
