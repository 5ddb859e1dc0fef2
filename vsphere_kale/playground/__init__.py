"""The whole system on a local control plane: what `vsphere-kale sandbox` runs."""
