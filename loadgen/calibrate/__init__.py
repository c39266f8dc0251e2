"""`loadgen calibrate`: a twin of a measured server, its step time fitted from a study database."""
