"""The PVC admission webhook: the pure admission core, the HTTPS server, its metrics."""
